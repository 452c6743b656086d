"""The sampled metrics' provider: dataDrift from every router pod's /inputs against the version's
reference profile, accuracy and meanAbsoluteError from every router pod's /feedback counts, through a
fake HTTP layer that answers as router admin ports do, and a profile made by `build_profile` from
training data."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from modelfleet.analysis import ProviderError, SampledValue, assess, summarize
from modelfleet.analysis.datadrift import build_profile, render_profile
from modelfleet.api import ModelVersion
from modelfleet.api.modelversion import ReferenceData
from modelfleet.api.monitor import Metric, MonitorSpec, Verdict
from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.report import Reason
from modelfleet.providers import Reading, Target, window
from modelfleet.providers.http import Http, HttpStatusError
from modelfleet.providers.reference import RETRY_AFTER, ReferenceProfiles, SecretUnreadable, read_reference
from modelfleet.providers.routeradmin import NO_ROUTERS, RouterAdmin
from modelfleet.providers.sampled import SampledMetrics

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MONITOR = ("ml", "iris-quality")
STEADY = Target(MONITOR, "ml", "iris", "iris-v2", uid="u-1")
ROLLOUT = Target(MONITOR, "ml", "iris", "iris-v2", reference="iris-v1", uid="u-1")
PODS = [("router-a", "10.0.0.1"), ("router-b", "10.0.0.2")]
ADMIN_TOKEN = "feedc0de" * 8


def gauss(seed: int, n: int, mean: float, sd: float) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.gauss(mean, sd), 3) for _ in range(n)]


TRAINING = {"petal_length": gauss(1, 2000, 4.0, 1.0), "petal_width": gauss(2, 2000, 1.2, 0.4)}
PROFILE = render_profile(build_profile(TRAINING)).encode()
DIGEST = "sha256:" + hashlib.sha256(PROFILE).hexdigest()
REFERENCE = {"uri": "s3://models/iris/2/profile.json", "digest": DIGEST}


def model_version(name: str, reference: Mapping[str, Any] | None = REFERENCE) -> ModelVersion:
    spec: dict[str, Any] = {"model": "iris", "version": name[-1], "image": "localhost/iris:1"}
    if reference is not None:
        spec["reference"] = dict(reference)
    return ModelVersion.from_k8s({"metadata": {"name": name, "namespace": "ml"}, "spec": spec})


def metric(**fields: Any) -> Metric:
    return Metric.model_validate(fields)


DRIFT = metric(name="input-drift", type="dataDrift", max=0.2)
ACCURACY = metric(name="accuracy", type="accuracy", min=0.9)
MAE = metric(name="mae", type="meanAbsoluteError", max=0.5, minSamples=20)


class RouterPorts(Http):
    """The admin ports of router pods, in memory: `answers[(ip, path)]` is a JSON document, a function of
    the query giving one, an HTTP status other than 200, or an exception to raise. Every request is
    kept in `asked` as (url, headers)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[tuple[str, str], Any] = {}
        self.asked: list[tuple[str, dict[str, str] | None]] = []

    async def get_bytes(self, url: str, seconds: float, headers: dict[str, str] | None = None) -> bytes:
        self.asked.append((url, headers))
        parts = urlsplit(url)
        answer = self.answers.get((parts.hostname or "", parts.path), 404)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, int):
            raise HttpStatusError(answer)
        if callable(answer):
            answer = answer(parts.query)
        return json.dumps(answer).encode()


class Reads:
    """A store of reference profiles in memory: uri -> bytes, or the FetchError a read gives."""

    def __init__(self, files: Mapping[str, bytes | FetchError] | None = None) -> None:
        self.files = dict(files or {REFERENCE["uri"]: PROFILE})
        self.calls: list[tuple[str, dict[str, str], str | None]] = []

    def __call__(self, uri: str, env: Mapping[str, str], digest: str | None) -> bytes:
        self.calls.append((uri, dict(env), digest))
        found = self.files.get(uri, FetchError(Reason.ARTIFACT_UNREACHABLE, f"{uri}: not found (404)"))
        if isinstance(found, FetchError):
            raise found
        if digest is not None and "sha256:" + hashlib.sha256(found).hexdigest() != digest:
            raise FetchError(Reason.DIGEST_MISMATCH, f"{uri}: digest does not match the expected {digest}")
        return found


@pytest.fixture
def ports() -> RouterPorts:
    return RouterPorts()


def provider(
    ports: RouterPorts,
    versions: Mapping[str, ModelVersion] | None = None,
    reads: Reads | None = None,
    pods: list[tuple[str, str]] | None = None,
    refused: list[tuple[str, str]] | None = None,
    references: ReferenceProfiles | None = None,
) -> SampledMetrics:
    running = PODS if pods is None else pods
    known = versions if versions is not None else {"iris-v2": model_version("iris-v2")}

    async def router_pods(namespace: str, deployment: str) -> list[tuple[str, str]]:
        assert (namespace, deployment) == ("ml", "iris")
        return list(running)

    async def token(target: Target) -> str | None:
        return ADMIN_TOKEN

    routers = RouterAdmin(
        router_pods,
        ports,
        admin_token=token,
        refused=(lambda ns, name: refused.append((ns, name))) if refused is not None else None,
    )
    return SampledMetrics(
        routers,
        references or ReferenceProfiles(None, read=reads or Reads()),
        lambda namespace, name: known.get(name),
    )


def measure(subject: SampledMetrics, target: Target, *metrics: Metric, at: datetime = NOW) -> Reading:
    return asyncio.run(subject.measure(target, metrics, at))


def judged(reading: Reading, *metrics: Metric, target: Target = STEADY) -> list[tuple[Verdict, str]]:
    spec = MonitorSpec(deployment="iris", metrics=metrics)
    merged = window(target.version, [reading], stable=target.reference or "")
    return [(r.verdict, r.message) for r in assess(spec, merged, NOW).results]


def inputs(ports: RouterPorts, version: str, per_pod: list[dict[str, list[float]]]) -> None:
    for (_, ip), features in zip(PODS, per_pod, strict=True):
        ports.answers[(ip, "/inputs")] = {version: features, "iris-v0": {"petal_length": [99.0]}}


# --- dataDrift ----------------------------------------------------------------------------------------------


def test_inputs_that_moved_fail_and_the_status_names_the_feature_that_drifted(ports: RouterPorts) -> None:
    inputs(
        ports,
        "iris-v2",
        [
            {"petal_length": gauss(3, 150, 6.0, 1.0), "petal_width": gauss(4, 150, 1.2, 0.4)},
            {"petal_length": gauss(5, 150, 6.0, 1.0), "petal_width": gauss(6, 150, 1.2, 0.4)},
        ],
    )

    reading = measure(provider(ports), STEADY, DRIFT)

    value = reading.sampled["input-drift"]
    assert isinstance(value, SampledValue)
    assert value.samples == 300  # both pods' inputs, merged
    ((verdict, message),) = judged(reading, DRIFT)
    assert verdict == Verdict.FAIL
    assert message.startswith(f"input-drift {value.value:.3g} > 0.2: petal_length psi ")
    assert message.endswith("> 0.2 (n=300)")
    assert "petal_width" not in message  # it did not move
    spec = MonitorSpec(deployment="iris", metrics=(DRIFT,))
    assert "petal_length psi" in summarize(assess(spec, window("iris-v2", [reading]), NOW))


def test_inputs_like_the_training_data_pass(ports: RouterPorts) -> None:
    inputs(
        ports,
        "iris-v2",
        [
            {"petal_length": gauss(7, 200, 4.0, 1.0), "petal_width": gauss(8, 200, 1.2, 0.4)},
            {"petal_length": gauss(9, 200, 4.0, 1.0), "petal_width": gauss(10, 200, 1.2, 0.4)},
        ],
    )

    ((verdict, message),) = judged(measure(provider(ports), STEADY, DRIFT), DRIFT)

    assert verdict == Verdict.PASS
    assert message.startswith("400 samples; petal_")
    assert message.endswith("<= 0.2 (n=400), the highest of 2 features")


def test_fewer_inputs_than_min_samples_are_inconclusive_even_when_shifted(ports: RouterPorts) -> None:
    shifted = {"petal_length": gauss(11, 20, 6.0, 1.0), "petal_width": gauss(12, 20, 3.0, 0.4)}
    inputs(ports, "iris-v2", [shifted, shifted])

    ((verdict, message),) = judged(measure(provider(ports), STEADY, DRIFT), DRIFT)

    assert verdict == Verdict.INCONCLUSIVE
    assert message == (
        "40 samples < minSamples 100; petal_length: n=40 < minSamples 100; petal_width: n=40 < minSamples 100"
    )


def test_the_input_samples_are_asked_for_with_the_admin_token(ports: RouterPorts) -> None:
    inputs(ports, "iris-v2", [{}, {}])

    measure(provider(ports), STEADY, DRIFT)

    assert sorted(url for url, _ in ports.asked) == [
        "http://10.0.0.1:9090/inputs",
        "http://10.0.0.2:9090/inputs",
    ]
    assert all(headers == {"Authorization": f"Bearer {ADMIN_TOKEN}"} for _, headers in ports.asked)


def test_a_version_without_a_reference_is_an_error_saying_so(ports: RouterPorts) -> None:
    inputs(ports, "iris-v2", [{}, {}])
    versions = {"iris-v2": model_version("iris-v2", reference=None)}

    reading = measure(provider(ports, versions), STEADY, DRIFT)

    assert reading.sampled == {"input-drift": ProviderError("ModelVersion iris-v2 has no spec.reference")}
    assert judged(reading, DRIFT) == [(Verdict.ERROR, "ModelVersion iris-v2 has no spec.reference")]


def test_a_version_that_does_not_exist_is_an_error(ports: RouterPorts) -> None:
    inputs(ports, "iris-v2", [{}, {}])

    reading = measure(provider(ports, versions={}), STEADY, DRIFT)

    assert reading.sampled == {"input-drift": ProviderError("ModelVersion iris-v2 not found")}


def test_a_profile_whose_digest_does_not_match_is_an_error_naming_the_cause(ports: RouterPorts) -> None:
    inputs(ports, "iris-v2", [{}, {}])
    other = {"uri": REFERENCE["uri"], "digest": "sha256:" + "0" * 64}

    reading = measure(provider(ports, {"iris-v2": model_version("iris-v2", other)}), STEADY, DRIFT)

    (value,) = reading.sampled.values()
    assert isinstance(value, ProviderError)
    assert value.message.startswith("reference profile of iris-v2: s3://models/iris/2/profile.json: digest")


def test_no_router_pod_running_yet_is_inconclusive(ports: RouterPorts) -> None:
    reading = measure(provider(ports, pods=[]), STEADY, DRIFT)

    value = reading.sampled["input-drift"]
    assert isinstance(value, SampledValue)
    assert (value.samples, value.detail) == (0, NO_ROUTERS)
    assert judged(reading, DRIFT) == [(Verdict.INCONCLUSIVE, f"0 samples < minSamples 100; {NO_ROUTERS}")]


def test_pods_that_do_not_answer_are_named_and_none_answering_is_an_error(ports: RouterPorts) -> None:
    ports.answers[("10.0.0.1", "/inputs")] = {"iris-v2": {"petal_length": gauss(13, 200, 4.0, 1.0)}}
    ports.answers[("10.0.0.2", "/inputs")] = TimeoutError()
    one = metric(name="input-drift", type="dataDrift", max=0.2, features=["petal_length"])

    partial = measure(provider(ports), STEADY, one)

    value = partial.sampled["input-drift"]
    assert isinstance(value, SampledValue)
    assert value.detail.endswith("; 1 of 2 router pods answered /inputs")
    ports.answers[("10.0.0.1", "/inputs")] = 503
    none = measure(provider(ports), STEADY, one).sampled["input-drift"]
    assert isinstance(none, ProviderError)
    assert none.message.startswith(
        "no router pod answered /inputs: router-a: HTTP 503; router-b: 10.0.0.2:9090"
    )


def test_a_router_refusing_the_admin_token_gets_its_secret_applied_again(ports: RouterPorts) -> None:
    ports.answers[("10.0.0.1", "/inputs")] = 403
    ports.answers[("10.0.0.2", "/inputs")] = 403
    told: list[tuple[str, str]] = []

    reading = measure(provider(ports, refused=told), STEADY, DRIFT)

    assert told == [("ml", "iris")]
    assert judged(reading, DRIFT)[0][0] == Verdict.ERROR


def test_during_a_rollout_a_ratio_bound_compares_with_the_stable_versions_own_drift(
    ports: RouterPorts,
) -> None:
    relative = metric(
        name="relative-drift", type="dataDrift", maxRatioToStable=3.0, features=["petal_length"]
    )
    for ip, seed in (("10.0.0.1", 20), ("10.0.0.2", 30)):
        ports.answers[(ip, "/inputs")] = {
            "iris-v2": {"petal_length": gauss(seed, 200, 5.0, 1.0)},
            "iris-v1": {"petal_length": gauss(seed + 1, 800, 4.0, 1.0)},
        }
    versions = {"iris-v2": model_version("iris-v2"), "iris-v1": model_version("iris-v1")}

    reading = measure(provider(ports, versions), ROLLOUT, DRIFT, relative)

    assert set(reading.sampled) == {"input-drift", "relative-drift"}
    assert set(reading.stable_sampled) == {"relative-drift"}  # only a ratio bound needs stable's value
    stable = reading.stable_sampled["relative-drift"]
    assert isinstance(stable, SampledValue)
    assert stable.samples == 1600
    (_, (verdict, message)) = judged(reading, DRIFT, relative, target=ROLLOUT)
    assert verdict == Verdict.FAIL
    assert "x stable's " in message
    assert "> 3x: petal_length psi " in message
    assert message.endswith("(n=400)")


# --- the reference profile: read once, kept, credentials ---------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_profile_is_read_once_and_kept_by_uri_and_digest(ports: RouterPorts) -> None:
    inputs(ports, "iris-v2", [{}, {}])
    reads = Reads()
    subject = provider(ports, reads=reads)

    for second in range(3):
        measure(subject, STEADY, DRIFT, at=NOW + timedelta(seconds=10 * second))
    measure(subject, Target(("ml", "another-monitor"), "ml", "iris", "iris-v2"), DRIFT)

    assert len(reads.calls) == 1
    assert subject.references.reads == 1


def test_a_failed_read_is_tried_again_only_after_a_while() -> None:
    reads = Reads(
        {
            REFERENCE["uri"]: FetchError(
                Reason.ARTIFACT_UNREACHABLE, "s3://models/iris/2/profile.json: cannot reach http://minio:9000"
            )
        }
    )
    clock = Clock()
    profiles = ReferenceProfiles(None, read=reads, clock=clock)
    reference = model_version("iris-v2").spec.reference
    assert reference is not None

    first = asyncio.run(profiles.profile("ml", "iris-v2", reference))
    asyncio.run(profiles.profile("ml", "iris-v2", reference))
    clock.now += RETRY_AFTER + 1
    reads.files[REFERENCE["uri"]] = PROFILE
    later = asyncio.run(profiles.profile("ml", "iris-v2", reference))

    assert first == ProviderError(
        "reference profile of iris-v2: s3://models/iris/2/profile.json: cannot reach http://minio:9000"
    )
    assert len(reads.calls) == 2
    assert not isinstance(later, ProviderError)


def test_the_kept_profiles_are_bounded() -> None:
    files = {f"s3://models/iris/{n}/profile.json": PROFILE for n in range(5)}
    reads = Reads(files)
    profiles = ReferenceProfiles(None, read=reads, limit=3)

    for uri in [*files, *files]:
        reference = model_version("iris-v2", {"uri": uri}).spec.reference
        assert reference is not None
        asyncio.run(profiles.profile("ml", "iris-v2", reference))

    assert len(profiles._kept) == 3
    assert len(reads.calls) == 10  # the least recently used went first, each read again


CREDENTIALS = {"secretName": "s3-creds"}
SECRET = {
    "AWS_ACCESS_KEY_ID": "AKIDTESTKEY01",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-very-secret",
    "AWS_ENDPOINT_URL": "http://minio.ml:9000",
    "unrelated": "x",
}


def with_credentials() -> ReferenceData:
    reference = model_version("iris-v2", {**REFERENCE, "credentials": CREDENTIALS}).spec.reference
    assert reference is not None
    return reference


def test_the_credentials_secret_is_read_and_only_its_store_keys_are_used() -> None:
    asked: list[tuple[str, str]] = []

    async def read_secret(namespace: str, name: str) -> Mapping[str, str] | None:
        asked.append((namespace, name))
        return SECRET

    reads = Reads()
    profiles = ReferenceProfiles(read_secret, read=reads)

    found = asyncio.run(profiles.profile("ml", "iris-v2", with_credentials()))

    assert not isinstance(found, ProviderError)
    assert asked == [("ml", "s3-creds")]
    ((_, env, digest),) = reads.calls
    assert env == {k: v for k, v in SECRET.items() if k != "unrelated"}
    assert digest == DIGEST


@pytest.mark.parametrize(
    ("read_secret", "message"),
    [
        (None, "reference profile of iris-v2: the operator reads no Secret, and credentials name s3-creds"),
        ("missing", "reference profile of iris-v2: credentials Secret s3-creds not found"),
        (
            "forbidden",
            "reference profile of iris-v2: the operator may not read Secret s3-creds (the chart's "
            "referenceProfiles.readSecrets)",
        ),
    ],
)
def test_credentials_that_cannot_be_had_are_an_error_saying_why(
    read_secret: str | None, message: str
) -> None:
    async def secrets(namespace: str, name: str) -> Mapping[str, str] | None:
        if read_secret == "forbidden":
            raise SecretUnreadable(
                f"the operator may not read Secret {name} (the chart's referenceProfiles.readSecrets)"
            )
        return None

    profiles = ReferenceProfiles(secrets if read_secret else None, read=Reads())

    assert asyncio.run(profiles.profile("ml", "iris-v2", with_credentials())) == ProviderError(message)


class Store(BaseHTTPRequestHandler):
    """An S3-compatible store on loopback that knows no access key: every request is AccessDenied."""

    def do_GET(self) -> None:
        body = b"<Error><Code>InvalidAccessKeyId</Code><Message>unknown key</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def store() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Store)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_store_refusing_the_credentials_is_an_error_that_names_no_credential(
    ports: RouterPorts, store: str
) -> None:
    async def read_secret(namespace: str, name: str) -> Mapping[str, str] | None:
        return {**SECRET, "AWS_ENDPOINT_URL": store}

    inputs(ports, "iris-v2", [{}, {}])
    versions = {"iris-v2": model_version("iris-v2", {**REFERENCE, "credentials": CREDENTIALS})}
    references = ReferenceProfiles(read_secret, read=read_reference)

    reading = measure(provider(ports, versions, references=references), STEADY, DRIFT)

    ((verdict, message),) = judged(reading, DRIFT)
    assert verdict == Verdict.ERROR
    assert message == (
        "reference profile of iris-v2: s3://models/iris/2/profile.json: "
        "access denied (403 InvalidAccessKeyId)"
    )
    assert SECRET["AWS_ACCESS_KEY_ID"] not in message
    assert SECRET["AWS_SECRET_ACCESS_KEY"] not in message


# --- accuracy and meanAbsoluteError -------------------------------------------------------------------------


def feedback(instance: str, cursor: int, **versions: tuple[int, int, int, float]) -> dict[str, Any]:
    """A router's /feedback answer: per version (labels, correct, numericLabels, absoluteError)."""
    return {
        "enabled": True,
        "instance": instance,
        "cursor": cursor,
        "predictions": {"count": 10, "limit": 10000, "bytes": 100, "oldestSeconds": 3.0},
        "versions": {
            name: {
                "labels": labels,
                "correct": correct,
                "accuracy": correct / labels if labels else None,
                "numericLabels": numeric,
                "absoluteError": error,
                "meanAbsoluteError": error / numeric if numeric else None,
                "pairs": [],
            }
            for name, (labels, correct, numeric, error) in versions.items()
        },
    }


def answer(ports: RouterPorts, ip: str, document: dict[str, Any] | int | BaseException) -> None:
    ports.answers[(ip, "/feedback")] = document


def windows(subject: SampledMetrics, target: Target, *metrics: Metric) -> Callable[[int], Reading]:
    """Measure window `n` (10 s apart)."""

    def at(n: int) -> Reading:
        return measure(subject, target, *metrics, at=NOW + timedelta(seconds=10 * n))

    return at


def test_accuracy_is_the_share_of_correct_labels_added_since_the_previous_read(ports: RouterPorts) -> None:
    subject = provider(ports)
    window_ = windows(subject, STEADY, ACCURACY)
    answer(ports, "10.0.0.1", feedback("a1", 500, **{"iris-v2": (400, 390, 0, 0.0)}))
    answer(ports, "10.0.0.2", feedback("b1", 300, **{"iris-v2": (200, 100, 0, 0.0)}))

    first = window_(0)
    answer(ports, "10.0.0.1", feedback("a1", 560, **{"iris-v2": (440, 430, 0, 0.0)}))
    answer(ports, "10.0.0.2", feedback("b1", 330, **{"iris-v2": (230, 122, 0, 0.0)}))
    second = window_(1)

    assert first.baseline  # what the routers gathered before is not this window's
    value = second.sampled["accuracy"]
    assert isinstance(value, SampledValue)
    assert (value.value, value.samples) == (pytest.approx(62 / 70), 70)
    assert judged(second, ACCURACY) == [(Verdict.FAIL, "accuracy 0.886 < 0.9: over the last 10s")]


def test_each_read_asks_only_for_the_pairs_after_the_pods_last_cursor(ports: RouterPorts) -> None:
    subject = provider(ports)
    answer(ports, "10.0.0.1", feedback("a1", 500))
    answer(ports, "10.0.0.2", feedback("b1", 300))

    windows(subject, STEADY, ACCURACY)(0)
    windows(subject, STEADY, ACCURACY)(1)

    asked = [url for url, _ in ports.asked]
    assert asked[:2] == ["http://10.0.0.1:9090/feedback?after=0", "http://10.0.0.2:9090/feedback?after=0"]
    assert asked[2:] == ["http://10.0.0.1:9090/feedback?after=500", "http://10.0.0.2:9090/feedback?after=300"]
    assert all(headers == {"Authorization": f"Bearer {ADMIN_TOKEN}"} for _, headers in ports.asked)


def test_a_restarted_router_brings_all_its_counts_as_new(ports: RouterPorts) -> None:
    subject = provider(ports, pods=PODS[:1])
    window_ = windows(subject, STEADY, ACCURACY)
    answer(ports, "10.0.0.1", feedback("a1", 900, **{"iris-v2": (800, 790, 0, 0.0)}))
    window_(0)
    answer(ports, "10.0.0.1", feedback("a2", 60, **{"iris-v2": (60, 57, 0, 0.0)}))  # a new process

    value = window_(1).sampled["accuracy"]

    assert isinstance(value, SampledValue)
    assert (value.value, value.samples) == (0.95, 60)
    assert [url for url, _ in ports.asked][-1] == "http://10.0.0.1:9090/feedback?after=900"


def test_at_modest_traffic_the_labels_of_several_windows_are_judged_together(ports: RouterPorts) -> None:
    subject = provider(ports, pods=PODS[:1])
    window_ = windows(subject, STEADY, ACCURACY)
    labels = 0
    readings = []
    for n in range(8):
        answer(ports, "10.0.0.1", feedback("a1", labels, **{"iris-v2": (labels, labels, 0, 0.0)}))
        readings.append(window_(n))
        labels += 8  # 8 labels a window, all correct

    verdicts = [judged(r, ACCURACY)[0] for r in readings[1:]]

    assert verdicts[0] == (Verdict.INCONCLUSIVE, "8 samples < minSamples 50; over the last 10s")
    assert verdicts[5] == (Verdict.INCONCLUSIVE, "48 samples < minSamples 50; over the last 1m")
    assert verdicts[6] == (Verdict.PASS, "56 samples; over the last 1m10s")


def test_the_mean_absolute_error_is_over_the_numeric_labels_added(ports: RouterPorts) -> None:
    subject = provider(ports, pods=PODS[:1])
    window_ = windows(subject, STEADY, MAE)
    answer(ports, "10.0.0.1", feedback("a1", 10, **{"iris-v2": (10, 0, 10, 4.0)}))
    window_(0)
    answer(ports, "10.0.0.1", feedback("a1", 40, **{"iris-v2": (40, 0, 40, 22.0)}))

    reading = window_(1)

    assert reading.sampled["mae"] == SampledValue(0.6, 30, "over the last 10s")
    assert judged(reading, MAE) == [(Verdict.FAIL, "mae 0.6 > 0.5: over the last 10s")]


def test_routers_that_take_no_feedback_are_an_error_naming_the_deployment(ports: RouterPorts) -> None:
    answer(ports, "10.0.0.1", {**feedback("a1", 0), "enabled": False})
    answer(ports, "10.0.0.2", {**feedback("b1", 0), "enabled": False})

    reading = measure(provider(ports), STEADY, ACCURACY)

    assert reading.sampled == {
        "accuracy": ProviderError("the routers of Deployment iris take no feedback: it has no spec.feedback")
    }


def test_a_pod_that_did_not_answer_brings_its_labels_with_its_next_answer(ports: RouterPorts) -> None:
    subject = provider(ports)
    window_ = windows(subject, STEADY, ACCURACY)
    answer(ports, "10.0.0.1", feedback("a1", 0, **{"iris-v2": (100, 100, 0, 0.0)}))
    answer(ports, "10.0.0.2", feedback("b1", 0, **{"iris-v2": (100, 100, 0, 0.0)}))
    window_(0)
    answer(ports, "10.0.0.1", feedback("a1", 0, **{"iris-v2": (130, 130, 0, 0.0)}))
    answer(ports, "10.0.0.2", TimeoutError())
    partial = window_(1)
    answer(ports, "10.0.0.2", feedback("b1", 0, **{"iris-v2": (150, 100, 0, 0.0)}))
    later = window_(2)

    assert partial.sampled["accuracy"] == SampledValue(
        1.0, 30, "over the last 10s; 1 of 2 router pods answered /feedback"
    )
    value = later.sampled["accuracy"]
    assert isinstance(value, SampledValue)
    assert (value.value, value.samples) == (0.0, 50)  # router-b's 50 labels since window 0, all wrong


def test_no_router_pod_answering_feedback_is_an_error(ports: RouterPorts) -> None:
    answer(ports, "10.0.0.1", 503)
    answer(ports, "10.0.0.2", {"instance": ""})

    value = measure(provider(ports), STEADY, ACCURACY).sampled["accuracy"]

    assert value == ProviderError(
        "no router pod answered /feedback: router-a: HTTP 503; "
        "router-b: bad /feedback answer: instance must be a non-empty string"
    )


def test_what_is_kept_follows_the_pods_and_the_versions_measured_and_forget_drops_it(
    ports: RouterPorts,
) -> None:
    pods = list(PODS)
    subject = provider(ports, pods=pods)
    answer(ports, "10.0.0.1", feedback("a1", 0, **{"iris-v2": (10, 10, 0, 0.0)}))
    answer(ports, "10.0.0.2", feedback("b1", 0, **{"iris-v2": (10, 10, 0, 0.0)}))
    relative = metric(name="accuracy", type="accuracy", minRatioToStable=0.95)
    window_ = windows(subject, ROLLOUT, relative)
    window_(0)
    window_(1)
    kept = subject._feedback[MONITOR]
    assert set(kept.routers) == {"router-a", "router-b"}
    assert set(kept.versions) == {"iris-v2", "iris-v1"}

    pods.pop()  # router-b is gone
    windows(subject, STEADY, relative)(2)  # promoted: iris-v2 alone is measured

    assert set(kept.routers) == {"router-a"}
    assert set(kept.versions) == {"iris-v2"}
    subject.forget(MONITOR)
    assert MONITOR not in subject._feedback
    assert windows(subject, STEADY, relative)(3).baseline


def test_during_a_rollout_stable_labels_of_the_same_reads_serve_a_ratio_bound(ports: RouterPorts) -> None:
    relative = metric(name="accuracy", type="accuracy", minRatioToStable=0.95, minSamples=20)
    subject = provider(ports, pods=PODS[:1])
    window_ = windows(subject, ROLLOUT, relative)
    answer(ports, "10.0.0.1", feedback("a1", 0, **{"iris-v2": (0, 0, 0, 0.0), "iris-v1": (500, 480, 0, 0.0)}))
    window_(0)
    answer(
        ports, "10.0.0.1", feedback("a1", 0, **{"iris-v2": (30, 24, 0, 0.0), "iris-v1": (800, 768, 0, 0.0)})
    )

    reading = window_(1)

    assert reading.stable_sampled["accuracy"] == SampledValue(0.96, 300, "over the last 10s")
    assert judged(reading, relative, target=ROLLOUT) == [
        (Verdict.FAIL, "accuracy 0.8 is 0.833x stable's 0.96 < 0.95x: over the last 10s")
    ]


def test_no_router_pod_running_makes_later_pods_bring_all_their_labels(ports: RouterPorts) -> None:
    pods: list[tuple[str, str]] = []
    subject = provider(ports, pods=pods)
    window_ = windows(subject, STEADY, ACCURACY)

    first = window_(0)
    pods.append(PODS[0])
    answer(ports, "10.0.0.1", feedback("a1", 0, **{"iris-v2": (60, 60, 0, 0.0)}))
    second = window_(1)

    assert judged(first, ACCURACY) == [(Verdict.INCONCLUSIVE, f"0 samples < minSamples 50; {NO_ROUTERS}")]
    assert second.sampled["accuracy"] == SampledValue(1.0, 60, "over the last 10s")
