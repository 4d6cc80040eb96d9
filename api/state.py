"""What the API process holds for its lifetime: settings, database sessions, the job sender."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dramatiq
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.queue import calendar_message
from models.settings import Settings


class JobSender:
    """Sends job messages by actor name. Safe to call from the API's worker threads."""

    def __init__(self, broker: dramatiq.Broker, queue_name: str) -> None:
        self.broker = broker
        self.queue_name = queue_name
        # redis-py is thread-safe; boto3 resources (the SQS broker) are not, so sends are
        # serialised. A send is one network round trip, so the lock is held briefly.
        self._lock = threading.Lock()

    def send_calendar_job(self, job_id: uuid.UUID) -> None:
        message = calendar_message(self.queue_name, job_id)
        with self._lock:
            self.broker.enqueue(message)


@dataclass
class ApiResources:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    sender: JobSender

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One session per request; the handler commits what it means to keep."""
        with self.sessions() as session:
            yield session
