"""Request ids: the client's own when sane, else one the router makes cheaply."""

from __future__ import annotations

import pytest

from modelfleet.httpcore import Request
from modelfleet.router.requestid import RequestIds, client_id, id_header, sane


def request(body: bytes = b"{}", **headers: str) -> Request:
    fields = [(name.replace("_", "-").lower().encode(), value.encode()) for name, value in headers.items()]
    return Request(b"POST", b"/v2/models/iris/infer", fields, body)


def test_made_ids_carry_the_process_tag_and_a_counter_and_never_repeat() -> None:
    ids = RequestIds(b"0123456789ab")
    assert [ids.issue() for _ in range(3)] == [b"0123456789ab-0", b"0123456789ab-1", b"0123456789ab-2"]
    made = {RequestIds().tag for _ in range(50)}
    assert len(made) == 50  # a random tag per process: two routers do not make the same ids
    assert all(len(tag) == 12 for tag in made)


def test_the_header_wins_over_the_body_and_a_body_id_counts_only_as_its_first_field() -> None:
    assert client_id(request(b'{"id": "b-1"}', X_Request_Id="h-1")) == b"h-1"
    assert client_id(request(b'{"id": "b-1", "inputs": []}')) == b"b-1"
    assert client_id(request(b' \n{ "id" : "b-2" }')) == b"b-2"
    assert client_id(request(b'{"inputs": [], "id": "late"}')) is None  # not first: the body is not parsed
    assert client_id(request(b'{"parameters": {"id": "nested"}}')) is None
    assert client_id(request(b'{"id": 7}')) is None  # an OIP id is a string
    assert client_id(request(b"")) is None


@pytest.mark.parametrize(
    "value", ["", "two words", "a\tb", "x" * 129, 'quote"d', "caf\u00e9", "semi;colon", "new\nline"]
)
def test_insane_client_ids_are_not_kept(value: str) -> None:
    assert not sane(value.encode())
    body = b'{"id": "%s"}' % value.encode()
    assert client_id(request(body, X_Request_Id=value.replace("\n", " ") or " ")) is None
    assert RequestIds(b"t").of(request(body)) == b"t-0"


@pytest.mark.parametrize("value", ["a", "42", "x" * 128, "order-17.b_c:d/e+f=g@h", "3f2a9c1b0d4e-1a"])
def test_sane_ids_are_kept_as_given(value: str) -> None:
    assert sane(value.encode())
    assert RequestIds(b"t").of(request(X_Request_Id=f" {value} ")) == value.encode()


def test_the_header_line() -> None:
    assert id_header(b"abc") == b"x-modelfleet-request-id: abc\r\n"
