"""How many threads (and client connections) the operator gives its API calls."""

from __future__ import annotations

import pytest

from modelfleet.controllers import kube, main


def test_the_default_is_32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kube.API_THREADS_VARIABLE, raising=False)
    assert kube.api_threads() == 32


def test_a_number_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kube.API_THREADS_VARIABLE, " 64 ")
    assert kube.api_threads() == 64


@pytest.mark.parametrize(("text", "says"), [("many", "not a whole number"), ("0", "between 1 and 512")])
def test_a_bad_value_stops_the_operator_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    monkeypatch.setenv(kube.API_THREADS_VARIABLE, text)
    assert main.main([]) == 2
    err = capsys.readouterr().err
    assert f"MODELFLEET_API_THREADS='{text}'" in err
    assert says in err
