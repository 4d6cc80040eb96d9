"""Schemathesis hooks for the conformance test: a fresh Idempotency-Key per request.

Schemathesis reuses generated header values across requests with different bodies. The API
rightly answers such a reuse 422 (a key names one request) or replays the first answer (a
todo since deleted, say), which schemathesis would take for the API rejecting valid input
or losing a resource. A schema-valid key is therefore replaced by a new uuid just before
sending; invalid ones are sent as generated (the API must answer them 400).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

from api.idempotency import HEADER, KEY_PATTERN

_VALID = re.compile(KEY_PATTERN)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    value = (case.headers or {}).get(HEADER)
    if isinstance(value, str) and _VALID.fullmatch(value):
        case.headers[HEADER] = str(uuid.uuid4())
