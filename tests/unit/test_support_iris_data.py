"""The iris traffic of the production-monitoring e2e tests, checked without a cluster: the bodies hold the
training rows with named features, the model server takes them and the router samples those features,
their truth is the data set's, the unshifted bodies pass the dataDrift metric against the profile whatever
mixture of them a router samples, a shift fails exactly the feature moved, the model server's classifier
is right on them (and wrong with MODELFLEET_FAULT_SHIFT), and the profile is served to the operator's
reader, its digest checked."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest

from modelfleet.analysis.datadrift import data_drift, load_profile
from modelfleet.api.monitor import Verdict
from modelfleet.fetch.errors import FetchError
from modelfleet.modelserver.app import parse_v2
from modelfleet.modelserver.model import Predictor, train
from modelfleet.providers.reference import read_reference
from modelfleet.router.inputs import extract_inputs
from support import iris_data
from support.iris_data import (
    FEATURES,
    NORMAL_PSI,
    SAMPLED_PSI,
    bodies,
    profile_bytes,
    profile_digest,
    rows_of,
    samples_of,
)
from support.load import Answer
from support.net import FileServer


def drift_of(*sent: bytes, method: str = "psi", limit: float = 0.2) -> dict[str, tuple[Verdict, float]]:
    profile = load_profile(profile_bytes())
    found = data_drift(profile, samples_of(*sent), method=method, limit=limit, min_samples=50)
    return {f.feature: (f.verdict, f.value or 0.0) for f in found.features}


def answer_to(body: bytes) -> Answer:
    return Answer(sent=0.0, time=0.0, code=200, body=body)


def test_the_bodies_hold_every_training_row_once_with_named_features_and_their_truth() -> None:
    sent = bodies()
    assert len(sent) == 2
    data, labels = iris_data.rows()
    got: Counter[tuple[tuple[float, ...], int]] = Counter()
    for body in sent:
        tensor = json.loads(body)["inputs"][0]
        assert tensor["shape"] == [75, 4]
        assert tensor["parameters"] == {"names": list(FEATURES)}
        truth = iris_data.truth(answer_to(body))
        assert truth is not None
        got.update(zip((tuple(row) for row in rows_of(body)), truth, strict=True))
    assert got == Counter(zip(data, labels, strict=True))
    assert bodies() is sent  # the same objects: answers are told apart by the body they answered
    assert iris_data.truth(answer_to(b'{"inputs": []}')) is None


def test_the_model_server_takes_the_bodies_and_the_router_samples_their_named_features() -> None:
    for body in (*bodies(), *bodies(petal_length=3.0)):
        rows, _, _ = parse_v2(body, len(FEATURES))
        assert rows.shape == (75, 4)
        sampled = extract_inputs(body, "v2")  # what the router keeps for /inputs
        assert {name: len(values) for name, values in sampled.items()} == dict.fromkeys(FEATURES, 75)
        assert sampled == samples_of(body)


def test_unshifted_bodies_pass_alone_and_mixed_a_shift_fails_only_its_feature() -> None:
    normal = bodies()
    for sample in [(normal[0],), (normal[1],), normal, (normal[0], normal[0], normal[1])]:
        drift = drift_of(*sample)
        assert {v for v, _ in drift.values()} == {Verdict.PASS}, drift
        assert max(value for _, value in drift.values()) < NORMAL_PSI, drift
    # a router keeps the newest 1,000 values of each feature: 13 whole bodies and the end of another
    newest = samples_of(*[normal[i % 2] for i in range(14)])
    window = {name: values[-1000:] for name, values in newest.items()}
    found = data_drift(load_profile(profile_bytes()), window, method="psi", limit=0.2, min_samples=50)
    assert found.verdict is Verdict.PASS
    assert (found.value or 0.0) < NORMAL_PSI, found.summary
    # and any cut of any sequence of them, as a router's newest values are
    rng = random.Random(13)
    for _ in range(40):
        sequence = samples_of(*[rng.choice(normal) for _ in range(15)])
        size = rng.choice([100, 150, 300, 700, 1000])
        cut = {name: values[-size:] for name, values in sequence.items()}
        found = data_drift(load_profile(profile_bytes()), cut, method="psi", limit=0.2, min_samples=50)
        assert (found.value or 0.0) < SAMPLED_PSI, (size, found.summary)
    shifted = bodies(petal_length=3.0)
    assert shifted != normal
    drift = drift_of(*shifted)
    assert drift["petal_length"][0] is Verdict.FAIL
    assert drift["petal_length"][1] > 2.0, drift
    assert all(drift[name][0] is Verdict.PASS for name in FEATURES if name != "petal_length"), drift
    # ks sees it too
    assert drift_of(*shifted, method="ks", limit=0.3)["petal_length"][0] is Verdict.FAIL
    with pytest.raises(ValueError, match="no such feature: petal"):
        bodies(petal=1.0)


def test_the_classifier_is_right_on_the_bodies_and_wrong_with_its_predictions_shifted() -> None:
    predictor = Predictor(train())
    labels = correct = shifted_correct = 0
    for body in bodies():
        truth = iris_data.truth(answer_to(body))
        assert truth is not None
        predicted = predictor.predict(np.asarray(rows_of(body)))
        labels += len(truth)
        correct += sum(p == t for p, t in zip(predicted, truth, strict=True))
        # MODELFLEET_FAULT_SHIFT=1: every predicted class + 1, modulo 3
        shifted_correct += sum((p + 1) % 3 == t for p, t in zip(predicted, truth, strict=True))
    assert correct / labels >= 0.95
    assert shifted_correct / labels <= 0.05
    # shifted inputs are still rows of 4 numbers: the model answers them (badly, but with a 200)
    assert len(predictor.predict(np.asarray(rows_of(bodies(petal_length=3.0)[0])))) == 75


def test_the_profile_is_served_and_read_as_the_operator_reads_it_digest_checked() -> None:
    with FileServer({"/iris/profile.json": profile_bytes()}) as server:
        url = server.url("/iris/profile.json")
        assert url.startswith("http://127.0.0.1:")
        data = read_reference(url, {}, profile_digest())
        assert data == profile_bytes()
        assert set(load_profile(data).features) == set(FEATURES)
        assert server.gets == {"/iris/profile.json": 1}
        with pytest.raises(FetchError, match="does not match"):
            read_reference(url, {}, "sha256:" + "0" * 64)
        with pytest.raises(FetchError, match=r"not found \(404\)"):
            read_reference(server.url("/nothing.json"), {}, None)
