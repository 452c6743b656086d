"""Verifying MLflow's webhook deliveries: a delivery a real MLflow 3.17.2 server made is accepted once;
one with another secret, other bytes, an old timestamp, a second time or without headers is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfleet.registry.webhooks import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Refusal,
    Refused,
    SeenDeliveries,
    signature,
    verify,
)

# Recorded from `mlflow server` 3.17.2 (webhook secret "s3cret"), after
# POST /api/2.0/mlflow/model-versions/create {"name": "iris", "source": "s3://bucket/iris/2", ...}
RECORDED_HEADERS = {
    "Host": "127.0.0.1:15124",
    "User-Agent": "python-requests/2.34.2",
    "Content-Type": "application/json",
    "X-MLflow-Delivery-Id": "d7df0d00-4669-422d-a50e-6f7cefa4d96d",
    "X-MLflow-Timestamp": "1796232447",
    "X-MLflow-Signature": "v1,9VGaSweN5DBKbSztt/WGpklUMaQB9+CCra+/dGFyk38=",
    "Content-Length": "232",
}
RECORDED_BODY = (
    b'{"entity": "model_version", "action": "created", "timestamp": "2026-12-02T17:27:27.422544+00:00", '
    b'"data": {"name": "iris", "version": "2", "source": "s3://bucket/iris/2", "run_id": null, '
    b'"tags": {"k": "v"}, "description": "second"}}'
)
RECORDED_SECRET = "s3cret"
RECORDED_AT = datetime.fromtimestamp(1796232447, tz=UTC)


def signed(
    body: bytes, secret: str = "shared", at: datetime = RECORDED_AT, delivery: str = "d-1"
) -> dict[str, str]:
    timestamp = str(int(at.timestamp()))
    return {
        DELIVERY_ID_HEADER: delivery,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, delivery, timestamp, body),
    }


ALIAS_SET = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-12-02T17:27:27.450138+00:00",
        "data": {"name": "iris", "alias": "champion", "version": "2"},
    }
).encode()


def test_a_delivery_made_by_mlflow_is_accepted_with_its_event() -> None:
    assert len(RECORDED_BODY) == int(RECORDED_HEADERS["Content-Length"])

    delivery = verify(
        RECORDED_HEADERS, RECORDED_BODY, RECORDED_SECRET, RECORDED_AT + timedelta(seconds=1), SeenDeliveries()
    )

    assert delivery.event == "model_version.created"
    assert (delivery.model, delivery.version) == ("iris", "2")
    assert delivery.data["source"] == "s3://bucket/iris/2"
    assert delivery.delivery_id == "d7df0d00-4669-422d-a50e-6f7cefa4d96d"
    assert delivery.sent == RECORDED_AT


def test_our_signature_is_the_one_mlflow_sent() -> None:
    h = RECORDED_HEADERS
    assert (
        signature(RECORDED_SECRET, h[DELIVERY_ID_HEADER], h[TIMESTAMP_HEADER], RECORDED_BODY)
        == h[SIGNATURE_HEADER]
    )


def test_the_same_delivery_a_second_time_is_a_replay() -> None:
    seen = SeenDeliveries()
    verify(RECORDED_HEADERS, RECORDED_BODY, RECORDED_SECRET, RECORDED_AT, seen)

    with pytest.raises(Refused) as refused:
        verify(RECORDED_HEADERS, RECORDED_BODY, RECORDED_SECRET, RECORDED_AT + timedelta(seconds=3), seen)

    assert refused.value.reason == Refusal.REPLAYED


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"secret": "another"}, Refusal.BAD_SIGNATURE),
        ({"body": RECORDED_BODY.replace(b'"2"', b'"3"')}, Refusal.BAD_SIGNATURE),
        ({"headers": {**RECORDED_HEADERS, DELIVERY_ID_HEADER: "another-id"}}, Refusal.BAD_SIGNATURE),
        ({"headers": {**RECORDED_HEADERS, TIMESTAMP_HEADER: "1796232448"}}, Refusal.BAD_SIGNATURE),
        ({"now": RECORDED_AT + timedelta(minutes=5, seconds=1)}, Refusal.STALE),
        ({"now": RECORDED_AT - timedelta(minutes=5, seconds=1)}, Refusal.STALE),
        ({"headers": {k: v for k, v in RECORDED_HEADERS.items() if k != SIGNATURE_HEADER}}, Refusal.UNSIGNED),
        ({"headers": {k: v for k, v in RECORDED_HEADERS.items() if k != TIMESTAMP_HEADER}}, Refusal.UNSIGNED),
        (
            {"headers": {k: v for k, v in RECORDED_HEADERS.items() if k != DELIVERY_ID_HEADER}},
            Refusal.UNSIGNED,
        ),
    ],
)
def test_a_delivery_not_signed_with_the_secret_or_not_fresh_is_refused(
    change: dict[str, object], reason: Refusal
) -> None:
    arguments: dict[str, object] = {
        "headers": RECORDED_HEADERS,
        "body": RECORDED_BODY,
        "secret": RECORDED_SECRET,
        "now": RECORDED_AT,
    }
    arguments.update(change)
    seen = SeenDeliveries()

    with pytest.raises(Refused) as refused:
        verify(seen=seen, **arguments)  # type: ignore[arg-type]

    assert refused.value.reason == reason
    assert RECORDED_SECRET not in str(refused.value)
    assert len(seen) == 0, "a refused delivery is not remembered"


def test_header_names_match_without_regard_to_case() -> None:
    lower = {name.lower(): value for name, value in RECORDED_HEADERS.items()}

    assert verify(lower, RECORDED_BODY, RECORDED_SECRET, RECORDED_AT, SeenDeliveries()).version == "2"


def test_one_of_several_signatures_may_match_as_during_a_secret_rotation() -> None:
    headers = signed(ALIAS_SET, secret="new")
    headers[SIGNATURE_HEADER] = (
        f"{signature('old', 'd-1', headers[TIMESTAMP_HEADER], ALIAS_SET)} " + headers[SIGNATURE_HEADER]
    )

    delivery = verify(headers, ALIAS_SET, "new", RECORDED_AT, SeenDeliveries())

    assert (delivery.event, delivery.alias, delivery.version) == (
        "model_version_alias.created",
        "champion",
        "2",
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"entity": "model_version", "action": "created"}',
        b'{"entity": "x", "action": "y", "data": {}}',
    ],
)
def test_a_signed_body_that_is_no_mlflow_delivery_is_malformed(body: bytes) -> None:
    with pytest.raises(Refused) as refused:
        verify(signed(body), body, "shared", RECORDED_AT, SeenDeliveries())

    assert refused.value.reason == Refusal.MALFORMED


def test_ids_are_forgotten_when_their_deliveries_could_only_be_stale() -> None:
    seen = SeenDeliveries()
    for n in range(5):
        at = RECORDED_AT + timedelta(minutes=n)
        verify(signed(ALIAS_SET, at=at, delivery=f"d-{n}"), ALIAS_SET, "shared", at, seen)

    assert len(seen) == 5
    later = RECORDED_AT + timedelta(minutes=10)
    verify(signed(ALIAS_SET, at=later, delivery="d-late"), ALIAS_SET, "shared", later, seen)

    assert "d-4" not in seen  # sent 6 minutes before: Stale anyway
    assert "d-late" in seen
    assert len(seen) == 1


def test_the_memory_of_ids_is_bounded() -> None:
    seen = SeenDeliveries(capacity=3)
    for n in range(10):
        verify(signed(ALIAS_SET, delivery=f"d-{n}"), ALIAS_SET, "shared", RECORDED_AT, seen)

    assert len(seen) == 3
    assert all(f"d-{n}" in seen for n in (7, 8, 9))


def test_an_empty_secret_is_a_programming_error_not_a_refusal() -> None:
    with pytest.raises(ValueError, match="no webhook secret"):
        verify(RECORDED_HEADERS, RECORDED_BODY, "", RECORDED_AT, SeenDeliveries())


@given(
    body=st.binary(max_size=256),
    secret=st.text(min_size=1, max_size=40),
    flip=st.integers(min_value=0, max_value=255),
)
def test_any_change_to_a_signed_body_breaks_its_signature(body: bytes, secret: str, flip: int) -> None:
    headers = signed(body, secret=secret)
    expected = signature(secret, "d-1", headers[TIMESTAMP_HEADER], body)
    assert headers[SIGNATURE_HEADER] == expected

    changed = body + b" " if not body else body[:-1] + bytes([(body[-1] + 1 + flip % 255) % 256])

    with pytest.raises(Refused) as refused:
        verify(headers, changed, secret, RECORDED_AT, SeenDeliveries())
    assert refused.value.reason == Refusal.BAD_SIGNATURE
