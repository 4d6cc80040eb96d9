"""What the API process holds for its lifetime: settings, the database, the job sender."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import dramatiq

from api.database import Database
from models.queue import calendar_message
from models.settings import Settings


class JobSender:
    """Sends job messages by actor name. Safe to call from the API's worker threads."""

    def __init__(self, broker: dramatiq.Broker, queue_name: str) -> None:
        # Every broker we build is safe to share between threads: redis-py and Dramatiq's
        # in-memory broker are, and the SQS broker serialises its own sends (models/sqs.py).
        self.broker = broker
        self.queue_name = queue_name

    def send_calendar_job(self, job_id: uuid.UUID) -> None:
        self.broker.enqueue(calendar_message(self.queue_name, job_id))


@dataclass
class ApiResources:
    settings: Settings
    db: Database
    sender: JobSender
