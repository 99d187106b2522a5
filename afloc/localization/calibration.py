"""Calibrated zero-shot probabilities: Platt scaling of each finding's zero-shot logit, fitted on a validation split.

The zero-shot score of a finding is a softmax over two scores (positive prompts, negative prompts), i.e. the
sigmoid of their difference ``z``. Uncalibrated, it is high for every finding on most films. Platt scaling fits
``p = sigmoid(slope * z + bias)`` per finding by logistic regression on labelled validation images: two
parameters, monotone in ``z`` (so the AUC is unchanged by construction), stable with a few hundred images, and a
bias that absorbs each finding's prevalence. (Temperature scaling alone keeps the threshold at ``z = 0`` and so
cannot move "every finding 0.9" down; isotonic regression needs more data than a validation split holds.)

Saved beside ``config.json`` as ``calibration.json`` (:data:`afloc.hub.format.CALIBRATION_NAME`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..settings import from_dict


@dataclass(frozen=True)
class FindingCalibration:
    """One finding's Platt parameters and what they were measured to do on the split they were fitted on.

    Attributes:
        slope, bias: ``p = sigmoid(slope * z + bias)``, ``z`` the positive-minus-negative zero-shot logit.
        auc: ROC AUC of ``z`` on the fitting split (unchanged by the monotone map).
        ece_before, ece_after: expected calibration error (10 equal-width bins) of the raw and calibrated values.
        n, positives: images and positive images in the fitting split.
    """

    slope: float
    bias: float
    auc: float = float("nan")
    ece_before: float = float("nan")
    ece_after: float = float("nan")
    n: int = 0
    positives: int = 0

    def __post_init__(self) -> None:
        for name in ("slope", "bias"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"calibration {name} must be a finite number, got {value!r}")

    def probability(self, logit: float | np.ndarray) -> float | np.ndarray:
        return _sigmoid(self.slope * np.asarray(logit, dtype=np.float64) + self.bias)


@dataclass(frozen=True)
class ZeroShotCalibration:
    """Per-finding Platt scaling (keys: the finding text as the zero-shot panel asks it, e.g. ``"pleural effusion"``).

    Attributes:
        findings: finding -> its :class:`FindingCalibration`.
        split: what it was fitted on (e.g. ``"val split of data/phantom6k/manifest.csv"``).
    """

    findings: dict[str, FindingCalibration] = field(default_factory=dict)
    method: str = "platt"
    split: str = ""

    def __post_init__(self) -> None:
        if self.method != "platt":
            raise ValueError(f"unknown calibration method {self.method!r}; this library reads 'platt'")

    def get(self, finding: str) -> FindingCalibration | None:
        return self.findings.get(finding.strip().lower())

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "split": self.split,
            "findings": {k: asdict(v) for k, v in self.findings.items()},
        }

    @classmethod
    def from_dict(cls, data: dict | None) -> ZeroShotCalibration:
        data = dict(data or {})
        findings = data.pop("findings", {}) or {}
        if not isinstance(findings, dict):
            raise ValueError("calibration: 'findings' must be a mapping of finding -> parameters")
        parsed = {
            str(k).strip().lower(): from_dict(FindingCalibration, v, f"calibration of {k!r}")
            for k, v in findings.items()
        }
        return from_dict(cls, {**data, "findings": parsed}, "calibration")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def uncalibrated_probability(logit: float | np.ndarray) -> float | np.ndarray:
    """``sigmoid(z)``: the zero-shot softmax over the positive and negative prompt sets, before calibration."""
    return _sigmoid(np.asarray(logit, dtype=np.float64))


def fit_platt(logits: np.ndarray, labels: np.ndarray, l2: float = 1e-3, iterations: int = 100) -> tuple[float, float]:
    """``(slope, bias)`` of ``sigmoid(slope * z + bias)`` by L2-regularised logistic regression (Newton's method).

    Raises:
        ValueError: fewer than one positive and one negative label, or inputs of different lengths.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape:
        raise ValueError(f"{z.size} logits but {y.size} labels")
    if not 0 < y.sum() < y.size:
        raise ValueError("Platt scaling needs at least one positive and one negative image")
    features = np.stack([z, np.ones_like(z)], axis=1)
    weights = np.zeros(2)
    penalty = np.diag([l2, 0.0]) * y.size
    for _ in range(iterations):
        p = _sigmoid(features @ weights)
        gradient = features.T @ (p - y) + penalty @ weights
        hessian = (features * (p * (1 - p))[:, None]).T @ features + penalty + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(weights[0]), float(weights[1])


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN without both classes."""
    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).astype(bool).ravel()
    positives, negatives = scores[labels], scores[~labels]
    if positives.size == 0 or negatives.size == 0:
        return float("nan")
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    ranks = np.empty(order.size, dtype=np.float64)
    ranks[order] = np.arange(1, order.size + 1)
    values = np.concatenate([positives, negatives])
    for value in np.unique(values):  # average ranks over ties
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float(
        (ranks[: positives.size].sum() - positives.size * (positives.size + 1) / 2) / (positives.size * negatives.size)
    )


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """``(mean predicted, observed frequency, count)`` per equal-width bin of [0, 1] (empty bins left out)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), 0.0, 1.0)
    y = np.asarray(labels, dtype=np.float64).ravel()
    index = np.minimum((p * bins).astype(int), bins - 1)
    return [
        (float(p[index == b].mean()), float(y[index == b].mean()), int((index == b).sum()))
        for b in range(bins)
        if (index == b).any()
    ]


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean of |predicted - observed| over equal-width bins."""
    rows = reliability(probabilities, labels, bins)
    total = sum(count for _, _, count in rows)
    return (
        float(sum(count * abs(predicted - observed) for predicted, observed, count in rows) / total)
        if total
        else float("nan")
    )


def fit_calibration(
    logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], split: str = ""
) -> ZeroShotCalibration:
    """Fit every finding that has both classes among ``labels``; the others are left uncalibrated."""
    fitted = {}
    for finding, z in logits.items():
        y = np.asarray(labels[finding]).astype(bool)
        if not 0 < y.sum() < y.size:
            continue
        slope, bias = fit_platt(z, y)
        item = FindingCalibration(slope, bias, n=int(y.size), positives=int(y.sum()))
        raw = uncalibrated_probability(z)
        fitted[finding.strip().lower()] = FindingCalibration(
            slope, bias, roc_auc(z, y), expected_calibration_error(raw, y),
            expected_calibration_error(item.probability(z), y), int(y.size), int(y.sum()),
        )  # fmt: skip
    return ZeroShotCalibration(fitted, split=split)
