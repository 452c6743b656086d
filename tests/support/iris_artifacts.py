"""Iris model artifacts as ML teams make them: a model file in a directory, with its digest.

`write(version, folder)` trains the iris classifier with scikit-learn and saves it with joblib as
`<folder>/model.joblib`, the file the MLServer runtime serves for format sklearn. Versions 1 and 2 are
good (v2 with a different regularisation); version 3 is the bad build the Monitor must catch: a
data-pipeline bug labelled every versicolor as virginica, so it never predicts versicolor and the
distribution of its predictions drifts far from the stable version's while every answer is a fast 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelfleet.fetch.digest import digest_path

MODEL_FILE = "model.joblib"


@dataclass(frozen=True)
class Artifact:
    version: int
    folder: Path
    digest: str
    size: int


def train(version: int) -> object:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    if version == 3:
        labels = labels.copy()
        labels[labels == 1] = 2  # the bad build: versicolor learnt as virginica
    strength = {1: 1.0, 2: 0.5}.get(version, 1.0)
    return LogisticRegression(max_iter=1000, C=strength, random_state=version).fit(features, labels)


def write(version: int, folder: Path) -> Artifact:
    """Train version `version` into `folder` (created); its digest is that of the directory."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(train(version), folder / MODEL_FILE)
    found = digest_path(folder)
    return Artifact(version, folder, found.digest, found.size)
