"""The shared core of TaskOverflow: data model, settings, database and queue contract.

Both the API and the workers import this package; it imports neither of them.
"""

from models.base import Base
from models.job import Job, JobKind, JobStatus
from models.todo import Todo

__all__ = ["Base", "Job", "JobKind", "JobStatus", "Todo"]
