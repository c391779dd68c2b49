"""Idempotent creates: a client that sends `Idempotency-Key` with a create can repeat the request
(after a timeout, a lost answer, a restart) and get the same incident, not a second one.

The key's incident id is derived from the caller and the key (a name-based UUID), so the store's
unique `_id` is what makes the create happen once, also when two copies of the request race or
a timed-out insert lands late. The request's digest is kept beside it, so the same key with
another request is refused (422) instead of answered with an incident it did not ask for.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass

from services.incidents.domain import OpenIncident

HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # visible ASCII, as the header field draft suggests
_NAMESPACE = uuid.UUID("5b0a3f56-6f1e-4c86-9a52-6f0c1a8e2d41")  # this platform's incidents


@dataclass(frozen=True)
class IdempotencyKey:
    incident_id: str
    digest: str

    @classmethod
    def of(cls, caller: str, key: str, command: OpenIncident) -> IdempotencyKey:
        incident_id = str(uuid.uuid5(_NAMESPACE, f"{caller}\n{key}"))
        request = json.dumps(asdict(command), sort_keys=True, default=str)
        return cls(incident_id, hashlib.sha256(request.encode()).hexdigest())
