"""The send job of a message row, under a job id derived from the row (so it can be found again from the row)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from dramatiq import Message

from libs import contracts

#: Namespace of the job ids of API-created messages (derived from the row, so a repeat finds the same job).
JOB_NAMESPACE = uuid.UUID("6f0b1c53-52a2-4c8e-9d0e-7a1f3f0e2b11")


def send_job_id(message_id: int, created_at: dt.datetime) -> str:
    """The Dramatiq message id of message ``message_id``'s send job (stable across retries and re-enqueues)."""
    return str(uuid.uuid5(JOB_NAMESPACE, f"message:{message_id}:{created_at.timestamp():.6f}"))


def send_job(message_id: int, priority: str, created_at: dt.datetime) -> Message[Any]:
    """The send job of a stored message, on its tier's queue, under :func:`send_job_id`."""
    contract = contracts.SEND_BY_TIER[priority]
    return contract.message(contracts.SendMessage(message_id)).copy(message_id=send_job_id(message_id, created_at))
