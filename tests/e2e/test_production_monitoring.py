"""Production monitoring on real pods, under real traffic from this host: inputs that drift away from the
training data, and true labels that come back through the router's feedback endpoint.

The clients send iris rows with named features (tests/support/iris_data.py: two requests of 75 rows,
each distributed like the training data). The versions' `spec.reference` is the profile of that training
data (`build_profile`), served over HTTP from this machine, where the e2e operator runs and reads it
itself (it needs no Secret for it, and no pod reaches the file). The labels are sent by
tests/support/feedback.py, with the Deployment's feedback token, for the answers' X-Modelfleet-Request-Id.

- Given a canary, when the clients' petal lengths move 3 cm away from the training data, then it is rolled
  back on dataDrift, and the status names petal_length and no other feature.
- Given a canary whose predictions are wrong (MODELFLEET_FAULT_SHIFT), when the clients send the true labels,
  then it is rolled back on accuracy.
- Given iris-v1 stable with onDegraded: Fallback and a fallback version kept warm, when the inputs drift,
  then the fallback serves all traffic, and when they come back it is released; no client sees an error.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import helpers
import pytest
from helpers import Fleet

from support import iris_data
from support.feedback import Feedback
from support.net import FileServer

PROFILE_PATH = "/iris/profile.json"
WRONG_PREDICTIONS = {"MODELFLEET_FAULT_SHIFT": "1"}
SHIFT = {"petal_length": 3.0}
"""How far the clients' inputs drift: petal lengths 3 cm longer (the training data's are 1 to 6.9)."""
OTHER_FEATURES = [name for name in iris_data.FEATURES if name not in SHIFT]
ERRORS = {"name": "errors", "type": "errorRate", "max": 0.05}
INPUT_DRIFT = {"name": "input-drift", "type": "dataDrift", "method": "psi", "max": 0.2, "minSamples": 100}
ACCURACY = {"name": "accuracy", "type": "accuracy", "min": 0.9, "minSamples": 100}


@dataclass(frozen=True)
class Reference:
    server: FileServer

    @property
    def spec(self) -> dict[str, Any]:
        """A ModelVersion's spec.reference: the profile's URL on this machine and its sha256."""
        return {"uri": self.server.url(PROFILE_PATH), "digest": iris_data.profile_digest()}

    @property
    def reads(self) -> int:
        return self.server.gets[PROFILE_PATH]


@pytest.fixture
def reference() -> Iterator[Reference]:
    with FileServer({PROFILE_PATH: iris_data.profile_bytes()}) as server:
        yield Reference(server)


def rolled_back(version: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: (
        s.get("phase") == "RolledBack"
        and s.get("canaryWeight") == 0
        and s.get("rolledBackVersion") == version
    )


def first_answer_from(fleet: Fleet, version: str, since: float) -> float:
    """When `version` first answered a request sent at `since` or later: when its first window began."""
    assert fleet.load is not None
    for answer in fleet.load.snapshot():
        if answer.sent >= since and answer.served_by == version:
            return answer.time
    raise AssertionError(f"{version} never answered a request sent after {since:.2f}")


def first_status(fleet: Fleet, after: float, predicate: Callable[[dict[str, Any]], bool]) -> float:
    """When the watch first saw a status, at `after` or later, for which `predicate` holds."""
    for t, s in sorted(fleet.timeline, key=lambda entry: entry[0]):
        if t >= after and predicate(s):
            return t
    raise AssertionError("no such status in the timeline")


def samples_in(message: str) -> int:
    """The inputs compared, from a dataDrift message: `petal_length psi 5.51 > 0.2 (n=1000)`."""
    found = re.search(r"\(n=(\d+)", message)
    assert found, message
    return int(found.group(1))


def failing_windows(fleet: Fleet, version: str) -> int:
    return sum(
        1
        for m in fleet.monitor_status().get("measurements", [])
        if m.get("version") == version and any(r.get("verdict") == "Fail" for r in m.get("results", []))
    )


def test_canary_whose_inputs_drift_is_rolled_back_on_data_drift_naming_the_feature(
    fleet: Fleet, reference: Reference
) -> None:
    load = fleet.serve_v1(
        helpers.model_version("iris-v1", "1", reference=reference.spec),
        helpers.model_version("iris-v2", "2", reference=reference.spec),
        helpers.monitor(metrics=[ERRORS, INPUT_DRIFT], failure_limit=2),
        monitor="iris-quality",
        bodies=iris_data.bodies(),
    )
    # given iris-v1 serving inputs like its training data: its drift is measured, against the profile
    # read from this machine, and passes
    control = fleet.wait_measured("iris-v1", "input-drift", "Pass", timeout=60)
    assert control["value"] < iris_data.SAMPLED_PSI, control

    # when a rollout starts and, from then on, the clients' petal lengths are 3 cm longer (stable is not
    # judged during a rollout: only the canary's inputs are, all of which are shifted)
    fleet.set_version("iris-v2")
    fleet.wait_status("iris-v2 rolling out", lambda s: s.get("canaryVersion") == "iris-v2", 60)
    shifted_at = load.set_bodies(iris_data.bodies(**SHIFT))
    final = fleet.wait_status("iris-v2 rolled back", rolled_back("iris-v2"), 150, interval=0.1)
    load.set_bodies(iris_data.bodies())  # the inputs come back: stable is judged again from here
    first = first_answer_from(fleet, "iris-v2", shifted_at)
    zero = first_status(fleet, first, rolled_back("iris-v2"))
    time.sleep(2)
    load.stop()

    # then it is rolled back on dataDrift, and the status says which feature drifted, and by how much
    entry = final["history"][0]
    assert (entry["version"], entry["result"]) == ("iris-v2", "RolledBack")
    assert entry["reason"].startswith("input-drift "), entry
    assert "petal_length psi " in entry["reason"], entry
    assert "> 0.2" in entry["reason"], entry
    assert not [name for name in OTHER_FEATURES if name in entry["reason"]], entry
    drift = fleet.measured("iris-v2", "input-drift", "Fail")
    assert drift["value"] > 2.0, drift  # the psi of petal_length alone; the others stay near 0
    assert "petal_length psi" in drift["message"], drift
    assert not [name for name in OTHER_FEATURES if name in drift["message"]], drift
    samples = samples_in(drift["message"])
    assert samples >= 100, drift  # minSamples: a smaller sample would have been Inconclusive
    assert fleet.measured("iris-v2", "errors", "Pass")  # it answered fine: only its inputs moved
    assert 2 <= failing_windows(fleet, "iris-v2") <= 3
    assert final["stableVersion"] == "iris-v1"
    assert helpers.canary_weight_in_router(fleet.cluster, fleet.namespace) == 0
    assert fleet.client_errors() == [], load.codes(since=fleet.serving_since)
    # both versions name the same file and digest: the operator read it once and kept it
    assert reference.reads == 1
    helpers.record_result(
        "data_drift_canary",
        {
            "secondsToRollback": round(zero - first, 2),
            "psi": round(drift["value"], 2),
            "samples": samples,
            "failingWindows": failing_windows(fleet, "iris-v2"),
            "requests": len(load.answers),
            "profileReads": reference.reads,
        },
    )


def test_canary_whose_answers_the_true_labels_contradict_is_rolled_back_on_accuracy(fleet: Fleet) -> None:
    token = secrets.token_hex(16)
    load = fleet.serve_v1(
        helpers.secret("iris-feedback", {"token": token}),
        helpers.model_version("iris-v1", "1"),
        helpers.model_version("iris-v2", "2", env=WRONG_PREDICTIONS),
        helpers.monitor(metrics=[ERRORS, ACCURACY], failure_limit=2),
        monitor="iris-quality",
        bodies=iris_data.bodies(),
        feedback_secret="iris-feedback",
    )
    # the clients send the true labels of half their answers (75 labels each), as they learn them
    with Feedback(load, token, iris_data.truth, every=2) as feedback:
        # given iris-v1, right on almost every row: its labels are joined and its accuracy passes
        feedback.wait_joined("iris-v1", 300, timeout=60)
        control = fleet.wait_measured("iris-v1", "accuracy", "Pass", timeout=60)
        assert control["value"] >= 0.95, control

        # when iris-v2, which predicts the wrong class for every row, rolls out
        started = time.time()
        fleet.set_version("iris-v2")
        final = fleet.wait_status("iris-v2 rolled back", rolled_back("iris-v2"), 150, interval=0.1)
        first = first_answer_from(fleet, "iris-v2", started)
        zero = first_status(fleet, first, rolled_back("iris-v2"))
        time.sleep(2)
    load.stop()

    # then it is rolled back on accuracy, which the router measured from the clients' labels
    entry = final["history"][0]
    assert (entry["version"], entry["result"]) == ("iris-v2", "RolledBack")
    assert entry["reason"].startswith("accuracy 0"), entry
    assert "< 0.9" in entry["reason"], entry
    accuracy = fleet.measured("iris-v2", "accuracy", "Fail")
    assert accuracy["value"] <= 0.1, accuracy
    assert fleet.measured("iris-v2", "errors", "Pass")  # every answer a fast 200: only the labels tell
    # what the clients were told when they sent the labels agrees
    joined = feedback.joined()
    canary_labels, canary_correct = joined["iris-v2"]
    stable_labels, stable_correct = joined["iris-v1"]
    assert canary_labels >= ACCURACY["minSamples"], joined
    assert canary_correct / canary_labels <= 0.1, joined
    assert stable_correct / stable_labels >= 0.95, joined
    # every label joined; at most those for iris-v2 answers labelled after it left the router: 410
    codes = feedback.codes()
    assert set(codes) <= {200, 410}, codes
    assert fleet.client_errors() == [], load.codes(since=fleet.serving_since)
    helpers.record_result(
        "accuracy_canary",
        {
            "secondsToRollback": round(zero - first, 2),
            "canaryAccuracy": round(accuracy["value"], 3),
            "stableAccuracy": round(control["value"], 3),
            "canaryLabels": canary_labels,
            "stableLabels": stable_labels,
            "labelAnswers": dict(codes),
            "requests": len(load.answers),
        },
    )


def test_drifted_inputs_move_traffic_to_the_fallback_version_and_back_without_client_errors(
    fleet: Fleet, reference: Reference
) -> None:
    load = fleet.serve_v1(
        helpers.model_version("iris-v1", "1", reference=reference.spec),
        # the heuristic kept warm: here the same model server image, what matters is who answers
        helpers.model_version("iris-rules", "3"),
        helpers.monitor(metrics=[INPUT_DRIFT], failure_limit=2, on_degraded="Fallback"),
        monitor="iris-quality",
        bodies=iris_data.bodies(),
        fallback_version="iris-rules",
    )

    def fallback_in_router() -> bool:
        config = helpers.router_config(fleet.cluster, fleet.namespace)
        return any(v["name"] == "iris-rules" and v["role"] == "fallback" for v in config.get("versions", []))

    # given iris-v1 stable, passing on inputs like its training data, and iris-rules warm behind it
    fleet.cluster.wait_for("iris-rules in the router's fallback chain", fallback_in_router, timeout=120)
    control = fleet.wait_measured("iris-v1", "input-drift", "Pass", timeout=60)
    assert control["value"] < iris_data.SAMPLED_PSI, control

    # when the clients' petal lengths drift: the fallback serves stable's traffic
    shifted_at = load.set_bodies(iris_data.bodies(**SHIFT))
    engaged = fleet.wait_status(
        "fallback engaged", lambda s: (s.get("fallback") or {}).get("active") is True, 90, interval=0.2
    )
    engaged_at = time.time()
    assert engaged["fallback"]["version"] == "iris-rules", engaged
    reason = engaged["fallback"]["reason"]
    assert reason.startswith("iris-v1 fails monitor iris-quality: input-drift "), reason
    assert "petal_length psi " in reason, reason
    assert not [name for name in OTHER_FEATURES if name in reason], reason
    assert engaged["phase"] == "Degraded"
    assert helpers.condition(engaged, "Degraded")["reason"] == "FallbackEngaged"
    assert engaged["stableVersion"] == "iris-v1"  # stable stays, measured on the copies it is sent
    time.sleep(8)  # the routers follow within a second; then several windows with the fallback serving
    held = fleet.status()
    assert held["fallback"]["active"] is True, held
    during = [a for a in load.between(engaged_at + 2, time.time() - 1) if a.ok]
    assert during
    assert {(a.served_by, a.fallback) for a in during} == {("iris-rules", "degraded")}
    drift = fleet.measured("iris-v1", "input-drift", "Fail")  # stable, measured on its copies
    assert drift["value"] > 2.0, drift

    # when the inputs come back: stable passes failureLimit times in a row and serves again
    restored_at = load.set_bodies(iris_data.bodies())
    released = fleet.wait_status(
        "fallback released", lambda s: not (s.get("fallback") or {}).get("active"), 90, interval=0.2
    )
    released_at = time.time()
    time.sleep(4)
    load.stop()

    # then all traffic is iris-v1's again, and no client saw an error throughout
    # failureLimit (2) passes in a row, or one more when two windows came between two reconciles
    assert re.fullmatch(
        r"released: iris-v1 passed monitor iris-quality [23] times in a row", released["fallback"]["reason"]
    ), released["fallback"]
    assert released["phase"] == "Healthy", released
    after = [a for a in load.between(released_at + 2) if a.ok]
    assert after
    assert {(a.served_by, a.fallback) for a in after} == {("iris-v1", "")}
    assert fleet.measured("iris-v1", "input-drift", "Pass")["value"] < iris_data.SAMPLED_PSI
    assert fleet.client_errors() == [], load.codes(since=fleet.serving_since)
    on = first_status(fleet, shifted_at, lambda s: (s.get("fallback") or {}).get("active") is True)
    off = first_status(fleet, restored_at, lambda s: not (s.get("fallback") or {}).get("active"))
    helpers.record_result(
        "drift_fallback",
        {
            "secondsToEngage": round(on - shifted_at, 2),
            "secondsToRelease": round(off - restored_at, 2),
            "psi": round(drift["value"], 2),
            "samples": samples_in(drift["message"]),
            "servedByFallback": sum(1 for a in load.snapshot() if a.served_by == "iris-rules"),
            "clientErrors": len(fleet.client_errors()),
            "requests": len(load.answers),
        },
    )
