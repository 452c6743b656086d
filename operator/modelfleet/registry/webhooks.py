"""MLflow's webhook deliveries, judged: is this call really from MLflow, fresh, and not seen before?

Pure (no HTTP, no clock: `now` is passed in). MLflow 3.17 (`mlflow/webhooks/delivery.py`) signs each
delivery the Standard Webhooks way:

- headers `X-MLflow-Delivery-Id` (a UUID), `X-MLflow-Timestamp` (Unix seconds), and, when the webhook has
  a secret, `X-MLflow-Signature: v1,<base64 HMAC-SHA256>`;
- the HMAC's key is the secret's UTF-8 bytes, its message `<delivery id>.<timestamp>.<body>`;
- the body is JSON: `{"entity", "action", "timestamp" (ISO 8601), "data"}` (and `"workspace"` when
  MLflow runs with workspaces), e.g. entity `model_version_alias`, action `created`, data
  `{"name": "iris", "alias": "champion", "version": "3"}`.

MLflow retries a delivery that got no answer, a 429 or a 5xx (3 times by default, backing off 1, 2, 4 s,
each try waiting up to 30 s) with the same headers, so a retry of a delivery that was answered
is an exact replay: `verify` refuses it as Replayed (answer it 2xx all the same; MLflow retries nothing
that got a 4xx either).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"

#: How far a delivery's timestamp may be from now, either way. MLflow's own retries of one delivery span
#: about two minutes at most (4 tries of up to 30 s, 7 s of back-off); the rest is clock skew.
DEFAULT_TOLERANCE = timedelta(minutes=5)
#: Largest body accepted: MLflow's payloads are a few hundred bytes (tags and descriptions can grow them).
MAX_BODY_BYTES = 1024 * 1024

#: The registry events the sync cares about, as MLflow names them (`<entity>.<action>`).
MODEL_EVENTS = frozenset(
    {
        "registered_model.created",
        "model_version.created",
        "model_version_tag.set",
        "model_version_tag.deleted",
        "model_version_alias.created",
        "model_version_alias.deleted",
    }
)


class Refusal(StrEnum):
    """Why a delivery was refused."""

    UNSIGNED = "Unsigned"
    """No signature, delivery id or timestamp header."""
    BAD_SIGNATURE = "BadSignature"
    """Not signed with the secret (or signed over other bytes)."""
    STALE = "Stale"
    """Its timestamp is further from now than the tolerance: a replay of an old call, or a clock off."""
    REPLAYED = "Replayed"
    """A delivery id already accepted."""
    MALFORMED = "Malformed"
    """Correctly signed, but not a delivery as MLflow makes them."""


class Refused(Exception):
    """A delivery `verify` does not accept; `reason` says why. Its text names no secret."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    """A verified delivery: which registry event, on which registered model."""

    delivery_id: str
    sent: datetime
    """The signed timestamp (X-MLflow-Timestamp)."""
    entity: str
    """registered_model, model_version, model_version_tag, model_version_alias, prompt..."""
    action: str
    """created, set, deleted..."""
    model: str
    """The registered model's name (data.name)."""
    version: str = ""
    """data.version, "" when the event has none (alias deleted, model created)."""
    alias: str = ""
    key: str = ""
    value: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    """The whole of data, as MLflow sent it."""

    @property
    def event(self) -> str:
        """`<entity>.<action>`, e.g. model_version_alias.created."""
        return f"{self.entity}.{self.action}"


class SeenDeliveries:
    """The delivery ids accepted within the tolerance, at most `capacity` of them (the oldest go first).

    An id is forgotten once its delivery is older than the tolerance: `verify` refuses such a delivery
    as Stale anyway. Only deliveries with a valid signature are remembered, so nobody without the secret
    can fill it; more than `capacity` genuine deliveries within one tolerance window would let the
    oldest be replayed until its own window ends.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, datetime] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, delivery_id: object) -> bool:
        return delivery_id in self._ids

    def add(self, delivery_id: str, sent: datetime, oldest: datetime) -> bool:
        """Remember `delivery_id`; False when it was already there. Forgets ids sent before `oldest`."""
        while self._ids and next(iter(self._ids.values())) < oldest:
            self._ids.popitem(last=False)
        if delivery_id in self._ids:
            return False
        self._ids[delivery_id] = sent
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The `X-MLflow-Signature` value MLflow sends for this delivery."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    now: datetime,
    seen: SeenDeliveries,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> Delivery:
    """The delivery in `headers` and `body`, if it is signed with `secret`, its timestamp is within
    `tolerance` of `now`, and its id is not in `seen` (it is added); else Refused.

    `headers` may be any mapping (names are matched without regard to case); `body` the exact bytes
    received. The signature is compared in constant time; the signature header may hold several
    space-separated signatures (one of them must match)."""
    if not secret:
        raise ValueError("no webhook secret")
    lower = {name.lower(): value for name, value in headers.items()}
    delivery_id = lower.get(DELIVERY_ID_HEADER.lower(), "")
    timestamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    signatures = lower.get(SIGNATURE_HEADER.lower(), "")
    if not (delivery_id and timestamp and signatures):
        given = {DELIVERY_ID_HEADER: delivery_id, TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signatures}
        raise Refused(Refusal.UNSIGNED, "no " + ", ".join(h for h, v in given.items() if not v))
    if len(body) > MAX_BODY_BYTES:
        raise Refused(Refusal.MALFORMED, f"body over {MAX_BODY_BYTES} bytes")
    expected = signature(secret, delivery_id, timestamp, body).encode()
    matched = False
    for candidate in signatures.split():
        matched |= hmac.compare_digest(candidate.encode(), expected)
    if not matched:
        raise Refused(Refusal.BAD_SIGNATURE, "the signature does not match the secret")
    try:
        sent = datetime.fromtimestamp(int(timestamp), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise Refused(Refusal.MALFORMED, f"{TIMESTAMP_HEADER} is not Unix seconds") from None
    if abs(now - sent) > tolerance:
        raise Refused(Refusal.STALE, f"sent {int((now - sent).total_seconds())} s from now")
    delivery = _parse(delivery_id, sent, body)
    if not seen.add(delivery_id, sent, oldest=now - tolerance):
        raise Refused(Refusal.REPLAYED, f"delivery {delivery_id[:64]} was already accepted")
    return delivery


def _parse(delivery_id: str, sent: datetime, body: bytes) -> Delivery:
    try:
        document = json.loads(body)
    except ValueError:
        raise Refused(Refusal.MALFORMED, "the body is not JSON") from None
    if not isinstance(document, Mapping):
        raise Refused(Refusal.MALFORMED, "the body is not a JSON object")
    entity, action, data = document.get("entity"), document.get("action"), document.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not isinstance(data, Mapping):
        raise Refused(Refusal.MALFORMED, "no entity, action or data")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise Refused(Refusal.MALFORMED, "data has no name")

    def text(key: str) -> str:
        value = data.get(key)
        return value if isinstance(value, str) else ""

    return Delivery(
        delivery_id=delivery_id,
        sent=sent,
        entity=entity,
        action=action,
        model=name,
        version=text("version"),
        alias=text("alias"),
        key=text("key"),
        value=text("value"),
        data=dict(data),
    )


__all__ = [
    "DEFAULT_TOLERANCE",
    "DELIVERY_ID_HEADER",
    "MODEL_EVENTS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Delivery",
    "Refusal",
    "Refused",
    "SeenDeliveries",
    "signature",
    "verify",
]
