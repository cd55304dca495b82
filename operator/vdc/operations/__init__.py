"""Durable multi-step operations (live migration, HA restart, evacuation …): a plan of idempotent
steps whose progress is kept in the operation's status, one step per reconcile (``plan``); the VM an
operation owns (``ownership``); reading, advancing and writing one operation (``runner``)."""
