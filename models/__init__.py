"""The shared core of TaskOverflow: what the API and the workers both need.

Both the API and the workers import this package; it imports neither of them. Inside:

- the tables: ``base`` (declarative base, naming convention), ``todo``, ``job``,
  ``attempt`` (each ended attempt of a job), ``idempotency`` (keys of retried POSTs),
  ``limits`` (todo counts, rate-limit state);
- the job's life: ``lifecycle``, every status transition, the only writer of a job's status;
- the queue contract: ``queue`` (broker factory, actor name per job kind, ``send_job``) and
  ``sqs`` (the SQS broker for production);
- the database: ``engine`` (sync engines for workers and tools), ``credentials`` (the
  password, from the settings or Secrets Manager), ``schema`` (Alembic upgrade in-process),
  ``clock`` (time as the tables store it);
- configuration: ``settings`` (the one reader of the environment), ``log_config``.
"""

from models.attempt import AttemptOutcome, JobAttempt
from models.base import Base
from models.idempotency import IdempotencyKey
from models.job import Job, JobKind, JobStatus
from models.limits import RateLimit, TodoCounts
from models.todo import Todo

__all__ = [
    "AttemptOutcome",
    "Base",
    "IdempotencyKey",
    "Job",
    "JobAttempt",
    "JobKind",
    "JobStatus",
    "RateLimit",
    "Todo",
    "TodoCounts",
]
