"""The router configuration schema (`modelfleet.api.routerconfig`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from modelfleet.api.routerconfig import CONFIG_KEY, RouterConfig, host_port


def document(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "deployment": "iris",
        "versions": [
            {"name": "iris-v1", "url": "http://iris-v1.ml.svc:8080", "weight": 90, "role": "stable"},
            {"name": "iris-v2", "url": "http://iris-v2.ml.svc:8080", "weight": 10, "role": "canary"},
        ],
    }
    base.update(overrides)
    return base


def test_the_configmap_key_is_config_json() -> None:
    assert CONFIG_KEY == "config.json"


def test_camel_case_json_with_api_md_fallback_fields_parses_to_seconds() -> None:
    config = RouterConfig.model_validate_json(
        json.dumps(
            document(
                mirrorPercent=5,
                fallback={
                    "timeout": "500ms",
                    "retryOnStable": False,
                    "circuitBreaker": {
                        "errorRate": 0.3,
                        "minRequests": 5,
                        "window": "1m30s",
                        "openFor": "2m",
                    },
                    "response": {"statusCode": 200, "contentType": "application/json", "body": '{"x":1}'},
                },
            )
        )
    )
    assert config.mirror_percent == 5
    assert config.fallback.timeout == 0.5
    assert config.fallback.retry_on_stable is False
    breaker = config.fallback.circuit_breaker
    assert breaker is not None
    assert (breaker.error_rate, breaker.min_requests, breaker.window, breaker.open_for) == (
        0.3,
        5,
        90.0,
        120.0,
    )
    assert config.fallback.response is not None
    assert config.fallback.response.body == '{"x":1}'
    assert config.stable.name == "iris-v1"
    assert [v.name for v in config.canaries] == ["iris-v2"]


def test_defaults_match_the_deployment_fallback_defaults() -> None:
    config = RouterConfig.model_validate(document())
    fallback = config.fallback
    assert fallback.timeout == 2.0
    assert fallback.retry_on_stable is True
    assert fallback.circuit_breaker is not None
    assert fallback.circuit_breaker.error_rate == 0.5
    assert fallback.circuit_breaker.min_requests == 20
    assert fallback.circuit_breaker.window == 10.0
    assert fallback.circuit_breaker.open_for == 30.0
    assert fallback.response is None
    assert config.mirror_percent == 0
    assert config.versions[0].protocol == "v2"


def test_json_round_trip_is_camel_case_with_duration_strings() -> None:
    config = RouterConfig.model_validate(document(fallback={"timeout": "1500ms"}))
    text = config.to_json()
    data = json.loads(text)
    assert data["mirrorPercent"] == 0
    assert data["fallback"]["timeout"] == "1s500ms"
    assert data["fallback"]["retryOnStable"] is True
    assert data["fallback"]["circuitBreaker"]["openFor"] == "30s"
    assert RouterConfig.model_validate_json(text) == config


def test_a_previous_version_is_read_with_weight_0_and_is_no_canary() -> None:
    """Given the document the operator writes after a promotion, when it is read, then the previous version
    is its own role: not stable, not a canary (so never mirrored to), and its weight is 0."""
    previous = {
        "name": "iris-v0",
        "url": "http://iris-v0.ml.svc:8080",
        "weight": 0,
        "role": "previous",
        "protocol": "v2",
    }
    text = json.dumps(document(versions=[*document()["versions"], previous]))
    config = RouterConfig.model_validate_json(text)
    assert config.previous is not None
    assert (config.previous.name, config.previous.weight, config.previous.role) == ("iris-v0", 0, "previous")
    assert config.stable.name == "iris-v1"
    assert [v.name for v in config.canaries] == ["iris-v2"]
    assert RouterConfig.model_validate_json(config.to_json()) == config


def test_without_a_previous_version_the_property_is_none() -> None:
    assert RouterConfig.model_validate(document()).previous is None


def test_a_fallback_version_is_read_with_weight_0_and_the_fallback_is_inactive_by_default() -> None:
    """Given the document the operator writes for a Deployment with spec.fallback.version, when it is read,
    then the fallback version has its own role, weight 0, and the fallback is not active."""
    fallback = {"name": "iris-rules", "url": "http://iris-rules.ml.svc:8080", "weight": 0, "role": "fallback"}
    config = RouterConfig.model_validate_json(
        json.dumps(document(versions=[*document()["versions"], fallback]))
    )
    assert config.fallback_version is not None
    assert (config.fallback_version.name, config.fallback_version.weight) == ("iris-rules", 0)
    assert config.fallback.active is False
    assert config.previous is None
    assert [v.name for v in config.canaries] == ["iris-v2"]
    assert RouterConfig.model_validate(document()).fallback_version is None
    assert json.loads(config.to_json())["fallback"]["active"] is False


@pytest.mark.parametrize(
    "extra",
    [
        {"versions": [*document()["versions"], {"name": "r", "url": "http://r:1", "role": "fallback"}]},
        {"fallback": {"response": {"body": "{}"}}},
    ],
)
def test_an_active_fallback_needs_a_fallback_version_or_a_response(extra: dict[str, Any]) -> None:
    fallback = {**extra.get("fallback", {}), "active": True}
    config = RouterConfig.model_validate(document(**{**extra, "fallback": fallback}))
    assert config.fallback.active is True
    assert RouterConfig.model_validate_json(config.to_json()) == config


def test_feedback_is_off_by_default_and_names_a_token_file_with_bounds_defaulted() -> None:
    assert RouterConfig.model_validate(document()).feedback is None
    config = RouterConfig.model_validate(document(feedback={"tokenFile": "/etc/modelfleet/feedback/token"}))
    assert config.feedback is not None
    assert (config.feedback.max_predictions, config.feedback.max_pairs) == (10_000, 1000)
    data = json.loads(config.to_json())
    assert data["feedback"] == {
        "tokenFile": "/etc/modelfleet/feedback/token",
        "maxPredictions": 10000,
        "maxPairs": 1000,
    }
    assert RouterConfig.model_validate_json(config.to_json()) == config


def test_capture_is_off_by_default_and_has_bounded_batches_and_buffer_by_default() -> None:
    assert RouterConfig.model_validate(document()).capture is None
    config = RouterConfig.model_validate(
        document(capture={"percent": 5, "uri": "s3://captures/iris/", "redact": ["email"]})
    )
    capture = config.capture
    assert capture is not None
    assert (capture.percent, capture.uri, capture.redact, capture.compression) == (
        5,
        "s3://captures/iris/",
        ["email"],
        "gzip",
    )
    assert (capture.batch_records, capture.batch_bytes, capture.flush_interval) == (1000, 8 << 20, 10.0)
    assert (capture.buffer_records, capture.buffer_bytes, capture.max_record_bytes) == (
        10_000,
        32 << 20,
        1 << 20,
    )
    data = json.loads(config.to_json())
    assert data["capture"] == {
        "percent": 5.0,
        "uri": "s3://captures/iris/",
        "redact": ["email"],
        "compression": "gzip",
        "batchRecords": 1000,
        "batchBytes": 8388608,
        "flushInterval": "10s",
        "bufferRecords": 10000,
        "bufferBytes": 33554432,
        "maxRecordBytes": 1048576,
    }
    assert RouterConfig.model_validate_json(config.to_json()) == config


def test_capture_writes_to_a_directory_with_its_own_bounds() -> None:
    config = RouterConfig.model_validate(
        document(
            capture={
                "percent": 100,
                "uri": "file:///mnt/capture/iris",
                "compression": "none",
                "batchRecords": 10,
                "flushInterval": "200ms",
                "bufferRecords": 10,
            }
        )
    )
    assert config.capture is not None
    assert (config.capture.uri, config.capture.flush_interval) == ("file:///mnt/capture/iris", 0.2)


def test_circuit_breaker_can_be_switched_off() -> None:
    config = RouterConfig.model_validate(document(fallback={"circuitBreaker": None}))
    assert config.fallback.circuit_breaker is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"versions": []}, "at least 1"),
        (
            {"versions": [{"name": "a", "url": "http://a:1", "role": "canary", "weight": 100}]},
            "exactly one version must have role stable, found 0",
        ),
        (
            {
                "versions": [
                    {"name": "a", "url": "http://a:1", "role": "stable", "weight": 50},
                    {"name": "b", "url": "http://b:1", "role": "stable", "weight": 50},
                ]
            },
            "exactly one version must have role stable, found 2",
        ),
        (
            {
                "versions": [
                    {"name": "a", "url": "http://a:1", "role": "stable", "weight": 50},
                    {"name": "a", "url": "http://b:1", "role": "canary", "weight": 50},
                ]
            },
            "version names must be unique; repeated: a",
        ),
        (
            {"versions": [{"name": "a", "url": "http://a:1", "role": "stable", "weight": 0}]},
            "at least one version needs a weight above 0",
        ),
        (
            {"versions": [{"name": "a", "url": "https://a:1", "role": "stable", "weight": 1}]},
            "must start with http://",
        ),
        (
            {"versions": [{"name": "a", "url": "http://a:1/v2", "role": "stable", "weight": 1}]},
            "without path",
        ),
        (
            {"versions": [{"name": "a", "url": "http://a:1", "role": "stable", "weight": 101}]},
            "less than or equal to 100",
        ),
        (
            {"versions": [{"name": "a", "url": "http://a:1", "role": "primary", "weight": 1}]},
            "'stable', 'canary', 'previous' or 'fallback'",
        ),
        (
            {
                "versions": [
                    {"name": "a", "url": "http://a:1", "role": "stable", "weight": 100},
                    {"name": "b", "url": "http://b:1", "role": "previous", "weight": 0},
                    {"name": "c", "url": "http://c:1", "role": "previous", "weight": 0},
                ]
            },
            "at most one version may have role previous, found 2: b, c",
        ),
        (
            {
                "versions": [
                    {"name": "a", "url": "http://a:1", "role": "stable", "weight": 90},
                    {"name": "b", "url": "http://b:1", "role": "previous", "weight": 10},
                ]
            },
            "version b has role previous and weight 10: the previous version takes no live traffic, "
            "its weight must be 0",
        ),
        (
            {
                "versions": [
                    {"name": "a", "url": "http://a:1", "role": "stable", "weight": 100},
                    {"name": "b", "url": "http://b:1", "role": "fallback", "weight": 0},
                    {"name": "c", "url": "http://c:1", "role": "fallback", "weight": 0},
                ]
            },
            "at most one version may have role fallback, found 2: b, c",
        ),
        (
            {
                "versions": [
                    {"name": "a", "url": "http://a:1", "role": "stable", "weight": 90},
                    {"name": "b", "url": "http://b:1", "role": "fallback", "weight": 10},
                ]
            },
            "version b has role fallback and weight 10: the fallback version takes traffic only in the "
            "chain or while fallback.active, its weight must be 0",
        ),
        (
            {"fallback": {"active": True}},
            "fallback.active needs a version with role fallback or a fallback.response",
        ),
        ({"mirrorPercent": 150}, "less than or equal to 100"),
        ({"fallback": {"timeout": "soon"}}, "invalid duration 'soon'"),
        ({"fallback": {"timeout": "0s"}}, "greater than 0"),
        ({"fallback": {"retryOnStabel": True}}, "Extra inputs are not permitted"),
        ({"fallback": {"response": {"statusCode": 99}}}, "greater than or equal to 200"),
        ({"feedback": {"tokenFile": "token"}}, "tokenFile must be an absolute path, got 'token'"),
        ({"feedback": {}}, "tokenFile\n  Field required"),
        ({"feedback": {"tokenFile": "/t", "maxPredictions": 0}}, "greater than or equal to 1"),
        ({"feedback": {"tokenFile": "/t", "token": "s3cret"}}, "Extra inputs are not permitted"),
        ({"capture": {"percent": 0, "uri": "s3://captures/"}}, "greater than 0"),
        ({"capture": {"percent": 101, "uri": "s3://captures/"}}, "less than or equal to 100"),
        ({"capture": {"percent": 5}}, "uri\n  Field required"),
        (
            {"capture": {"percent": 5, "uri": "pvc://claim/path"}},
            "uri 'pvc://claim/path' must be s3://BUCKET/PREFIX or file:///DIR",
        ),
        ({"capture": {"percent": 5, "uri": "s3://A_B/x"}}, "uri 's3://A_B/x' is not s3://BUCKET/PREFIX"),
        (
            {"capture": {"percent": 5, "uri": "file:///mnt/capture/../etc"}},
            "must be an absolute directory without '..'",
        ),
        (
            {"capture": {"percent": 5, "uri": "s3://captures/", "redact": [""]}},
            "redact names must be 1 to 256",
        ),
        ({"capture": {"percent": 5, "uri": "s3://captures/", "compression": "zstd"}}, "'gzip' or 'none'"),
        ({"capture": {"percent": 5, "uri": "s3://captures/", "flushInterval": "0s"}}, "greater than 0"),
        (
            {"capture": {"percent": 5, "uri": "s3://captures/", "batchRecords": 100, "bufferRecords": 10}},
            "capture.batchRecords 100 is more than bufferRecords 10",
        ),
        (
            {"capture": {"percent": 5, "uri": "s3://captures/", "bufferBytes": 4096, "maxRecordBytes": 8192}},
            "capture.maxRecordBytes 8192 is more than bufferBytes 4096",
        ),
        (
            {"capture": {"percent": 5, "uri": "s3://captures/", "credentials": {"secretName": "x"}}},
            "Extra inputs are not permitted",
        ),
    ],
)
def test_bad_configurations_are_refused_with_the_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RouterConfig.model_validate(document(**change))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://iris-v1.ml.svc:8080", ("iris-v1.ml.svc", 8080)),
        ("http://10.0.0.7", ("10.0.0.7", 80)),
        ("http://[::1]:9000/", ("::1", 9000)),
    ],
)
def test_host_port_of_plain_http_origins(url: str, expected: tuple[str, int]) -> None:
    assert host_port(url) == expected


@pytest.mark.parametrize("url", ["http://a:notaport", "http://:80", "http://user:pw@a:1", "ftp://a"])
def test_host_port_refuses_anything_else(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        host_port(url)
