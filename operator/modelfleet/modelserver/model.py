"""The iris model: train, save, load, predict.

Training uses the iris data set shipped with scikit-learn (no download) and takes milliseconds. For a
linear classifier, prediction reads the fitted coefficients directly with numpy (the same arithmetic as
`predict`, without scikit-learn's per-call input validation, which costs more than the model itself);
other estimators go through their own `predict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
CLASSES = ("setosa", "versicolor", "virginica")


def train(seed: int = 0) -> Any:
    """A logistic-regression classifier fitted on the whole iris data set."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000, random_state=seed).fit(features, labels)


def save(estimator: Any, path: str | Path) -> None:
    import joblib

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, path)


def load(path: str | Path) -> Any:
    """Load a model saved by `save` (a trusted file baked into the image: joblib runs pickle)."""
    import joblib

    return joblib.load(path)


class Predictor:
    """Turns rows of 4 features into class labels (0, 1, 2)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        coef = getattr(estimator, "coef_", None)
        intercept = getattr(estimator, "intercept_", None)
        classes = getattr(estimator, "classes_", None)
        self._linear = coef is not None and intercept is not None and classes is not None and len(classes) > 2
        if self._linear:
            self._weights = np.asarray(coef, dtype=np.float64).T.copy()
            self._intercept = np.asarray(intercept, dtype=np.float64)
            self._classes = np.asarray(classes)
        features = getattr(estimator, "n_features_in_", len(FEATURES))
        self.features = int(features)

    def predict(self, rows: np.ndarray) -> list[int]:
        """Labels for a (n, features) array."""
        if rows.ndim != 2 or rows.shape[1] != self.features:
            raise ValueError(f"expected rows of {self.features} features, got shape {list(rows.shape)}")
        if self._linear:
            scores = rows @ self._weights + self._intercept
            labels = self._classes[np.argmax(scores, axis=1)]
        else:
            labels = self.estimator.predict(rows)
        return [int(label) for label in labels]
