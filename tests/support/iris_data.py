"""Iris traffic for the production-monitoring tests: request bodies with named features, their true
labels, and the reference profile of the training data they come from.

The training data is scikit-learn's iris data set (150 rows, no download), the data the model server's
classifier is fitted on (modelfleet.modelserver.model.train). Its features are named as a profile names
them, `FEATURES`; the requests name them too, in the input's `parameters.names`, so the router's input
samples carry the same names (docs/router.md, the admin port's /inputs).

- `bodies(**shift)`: the 150 rows as two Open Inference Protocol v2 requests of 75 rows each (the router
  reads at most 100 rows of a request for its input samples, so every row counts). The rows are sorted by
  sepal length and dealt to the two alternately, so that each request alone is distributed like the
  training data: against the profile, every feature's psi is below 0.07 (`NORMAL_PSI`) for each of them,
  and so for any mixture of the two (psi is convex in the sample's shares). Within a body the rows are
  in a fixed random order, so that the oldest body of the router's newest 1,000 values, of which only
  its last rows are left, is no biased part of it. `shift` adds a constant to
  features (`bodies(petal_length=3.0)`: inputs moved away from the training data); the same arguments
  give the same objects, so the Load's answers can be told apart by `Answer.body`.
- `truth(answer)`: the true labels of the rows of the body an answer answered (a list of 75 class ids),
  None for a body not made here.
- `profile_bytes()`: `build_profile` of the 150 rows, as `modelfleet profile` writes it, and
  `profile_digest()`, its `sha256:...` for `spec.reference.digest`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Mapping

from support.load import Answer

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
ROWS_PER_BODY = 75
NORMAL_PSI = 0.07
"""The largest psi of any feature of one unshifted body against the profile (tests/unit checks it)."""
SAMPLED_PSI = 0.1
"""The largest psi of any feature of what a router may sample of the unshifted bodies: its newest values
cut the oldest body anywhere, and a window of 100 values is one and a third bodies (tests/unit checks it
on random cuts)."""


@functools.cache
def rows() -> tuple[tuple[tuple[float, ...], ...], tuple[int, ...]]:
    """The iris rows (4 features each) and their labels (0 setosa, 1 versicolor, 2 virginica)."""
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    return tuple(tuple(float(v) for v in row) for row in features), tuple(int(v) for v in labels)


def columns() -> dict[str, list[float]]:
    """The training data by feature, as `build_profile` takes it."""
    data, _ = rows()
    return {name: [row[i] for row in data] for i, name in enumerate(FEATURES)}


_LABELS: dict[bytes, list[int]] = {}


@functools.cache
def _bodies(shift: tuple[tuple[str, float], ...]) -> tuple[bytes, ...]:
    data, labels = rows()
    moved = dict(shift)
    unknown = sorted(set(moved) - set(FEATURES))
    if unknown:
        raise ValueError(f"no such feature: {', '.join(unknown)} (features: {', '.join(FEATURES)})")
    order = sorted(range(len(data)), key=lambda i: (data[i][0], i))
    out = []
    for part in range(len(data) // ROWS_PER_BODY):
        chosen = order[part :: len(data) // ROWS_PER_BODY]
        random.Random(part).shuffle(chosen)  # a router keeps the newest values: any part is a fair sample
        values = [
            round(data[i][j] + moved.get(name, 0.0), 4) for i in chosen for j, name in enumerate(FEATURES)
        ]
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [len(chosen), len(FEATURES)],
                        "datatype": "FP64",
                        "data": values,
                        "parameters": {"names": list(FEATURES)},
                    }
                ]
            },
            separators=(",", ":"),
        ).encode()
        _LABELS[body] = [labels[i] for i in chosen]
        out.append(body)
    return tuple(out)


def bodies(**shift: float) -> tuple[bytes, ...]:
    """The two request bodies, with `shift` added to the named features."""
    return _bodies(tuple(sorted(shift.items())))


def truth(answer: Answer) -> list[int] | None:
    """The true labels of the rows `answer` answered; None for a body `bodies` did not make."""
    return _LABELS.get(answer.body)


def rows_of(body: bytes) -> list[list[float]]:
    """The rows a body holds (for checks without a cluster)."""
    tensor = json.loads(body)["inputs"][0]
    width = tensor["shape"][1]
    flat = tensor["data"]
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def samples_of(*sent: bytes) -> Mapping[str, list[float]]:
    """The inputs a router would sample from these bodies, by feature."""
    out: dict[str, list[float]] = {name: [] for name in FEATURES}
    for body in sent:
        for row in rows_of(body):
            for name, value in zip(FEATURES, row, strict=True):
                out[name].append(value)
    return out


@functools.cache
def profile_bytes() -> bytes:
    """The training data's reference profile file."""
    from modelfleet.analysis.datadrift import build_profile, render_profile

    return render_profile(build_profile(columns())).encode()


def profile_digest() -> str:
    return "sha256:" + hashlib.sha256(profile_bytes()).hexdigest()
