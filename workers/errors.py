"""Exceptions that decide what happens to a job's attempt."""


class PermanentJobError(Exception):
    """Retrying cannot help (bad input, unknown job kind): the job ends FAILURE at once."""


class JobCancelled(Exception):
    """The work must stop: a cancel was asked for, or the job is no longer this attempt's
    (finished by someone else). Raised from ``Progress``; ``run_job`` records CANCELLED (or
    nothing, if the job had finished) and returns normally, so the message is acknowledged."""
