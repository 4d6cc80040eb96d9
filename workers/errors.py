"""Exceptions that decide what happens to a failed job."""


class PermanentJobError(Exception):
    """Retrying cannot help (bad input, unknown job kind): the job ends FAILURE at once."""
