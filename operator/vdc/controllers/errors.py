"""Outcomes the handlers treat alike across kinds."""


class DeletionWaits(Exception):
    """The object cannot be deleted yet; the message says why and how to get out."""


class ReportedFailure(Exception):
    """A failure the controller has already written to the object's status (and Events): the work queue
    only retries it with backoff. Raise it ``from`` the original error."""


def first_line(exc: BaseException) -> str:
    """An error for a condition message: its first non-empty line, no traceback; the type if it is blank."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
