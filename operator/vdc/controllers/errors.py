"""Outcomes the handlers treat alike across kinds."""


class DeletionWaits(Exception):
    """The object cannot be deleted yet; the message says why and how to get out."""
