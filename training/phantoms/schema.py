"""What a PhantomCXR case is: findings, devices and how they are sampled.

A case is sampled first (:func:`sample_case`: which findings, where, how severe), then rendered
(:mod:`training.phantoms.render` fills each finding's mask and boxes) and described
(:mod:`training.phantoms.reports` writes the report and each finding's phrase).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Finding kinds (pathology with ground truth) and their sampling weights.
FINDING_WEIGHTS: dict[str, float] = {
    "consolidation": 0.20,
    "atelectasis": 0.14,
    "pleural_effusion": 0.15,
    "pneumothorax": 0.10,
    "nodule": 0.12,
    "mass": 0.08,
    "cardiomegaly": 0.10,
    "edema": 0.11,
}
FINDING_KINDS = tuple(FINDING_WEIGHTS)
DEVICE_KINDS = ("endotracheal_tube", "central_venous_catheter", "nasogastric_tube", "pacemaker")
SPLITS = ("train", "val", "test")
SIDES = ("right", "left")  # patient sides; "right" is on the image's left
LUNG_ZONES = ("upper", "middle", "lower")

NORMAL_FRACTION = 0.25
DEVICE_PROBABILITY = 0.3


@dataclass
class Finding:
    """One pathological finding.

    Attributes:
        kind: one of :data:`FINDING_KINDS`.
        side: ``"right"`` / ``"left"`` (patient sides), ``"bilateral"``, or ``None`` (cardiomegaly).
        zone: ``"upper"``, ``"middle"``, ``"lower"`` (lung zones), ``"apical"`` / ``"lateral"`` (pneumothorax),
            ``"basal"`` (effusion), ``"perihilar"`` (edema) or ``None`` (cardiomegaly).
        severity: ``"small"`` / ``"moderate"`` / ``"large"`` (effusion, pneumothorax, consolidation extent) or
            ``"mild"`` / ``"moderate"`` / ``"severe"`` (cardiomegaly, edema, atelectasis).
        pattern: ``"lobar"`` / ``"patchy"`` (consolidation), ``"plate"`` / ``"linear"`` (atelectasis), else None.
        size_cm: diameter of a nodule or mass, else None.
        mask: boolean ``[H, W]`` ground-truth mask, set by the renderer.
        boxes: ``[[x, y, w, h], ...]`` pixel boxes of the mask's parts (two for bilateral findings), set by the
            renderer.
        phrase: short description of this finding used as the localization prompt, set by the report writer.
    """

    kind: str
    side: str | None = None
    zone: str | None = None
    severity: str | None = None
    pattern: str | None = None
    size_cm: float | None = None
    mask: np.ndarray | None = field(default=None, repr=False)
    boxes: list[list[float]] = field(default_factory=list)
    phrase: str | None = None


@dataclass
class Device:
    """A support device: mentioned in the report, drawn on the film, never a localization target."""

    kind: str
    side: str | None = None


@dataclass
class Case:
    """One synthetic study.

    Attributes:
        case_id: unique identifier (file stem).
        split: ``"train"``, ``"val"`` or ``"test"`` (selects the phrasing vocabulary of the report).
        view: ``"PA"`` or ``"AP"``.
        findings: pathological findings (empty for a normal study).
        devices: support devices.
        has_prior: whether the report compares with a prior study.
    """

    case_id: str
    split: str
    view: str
    findings: list[Finding]
    devices: list[Device]
    has_prior: bool = False

    @property
    def labels(self) -> list[str]:
        return sorted({f.kind for f in self.findings})


def _sample_finding(kind: str, rng: np.random.Generator) -> Finding:
    side = str(rng.choice(SIDES))
    if kind == "consolidation":
        return Finding(
            kind,
            side,
            str(rng.choice(LUNG_ZONES, p=[0.25, 0.3, 0.45])),
            str(rng.choice(["small", "moderate", "large"], p=[0.35, 0.4, 0.25])),
            pattern=str(rng.choice(["lobar", "patchy"])),
        )
    if kind == "atelectasis":
        return Finding(
            kind,
            side,
            str(rng.choice(LUNG_ZONES, p=[0.15, 0.35, 0.5])),
            str(rng.choice(["mild", "moderate", "severe"], p=[0.5, 0.35, 0.15])),
            pattern=str(rng.choice(["plate", "linear"])),
        )
    if kind == "pleural_effusion":
        side = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.4, 0.2]))
        return Finding(kind, side, "basal", str(rng.choice(["small", "moderate", "large"], p=[0.45, 0.35, 0.2])))
    if kind == "pneumothorax":
        return Finding(
            kind,
            side,
            str(rng.choice(["apical", "lateral"], p=[0.6, 0.4])),
            str(rng.choice(["small", "moderate", "large"], p=[0.5, 0.3, 0.2])),
        )
    if kind == "nodule":
        return Finding(kind, side, str(rng.choice(LUNG_ZONES)), size_cm=round(float(rng.uniform(0.8, 2.5)), 1))
    if kind == "mass":
        return Finding(kind, side, str(rng.choice(LUNG_ZONES)), size_cm=round(float(rng.uniform(3.0, 6.5)), 1))
    if kind == "cardiomegaly":
        return Finding(kind, None, None, str(rng.choice(["mild", "moderate", "severe"], p=[0.45, 0.4, 0.15])))
    if kind == "edema":
        return Finding(kind, "bilateral", "perihilar", str(rng.choice(["mild", "moderate", "severe"])))
    raise ValueError(f"unknown finding kind {kind!r}; expected one of {FINDING_KINDS}")


def sample_case(rng: np.random.Generator, case_id: str, split: str) -> Case:
    """Sample a study: about a quarter normal, otherwise 1 to 3 findings of different kinds, plus devices."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    findings: list[Finding] = []
    if rng.random() >= NORMAL_FRACTION:
        count = int(rng.choice([1, 2, 3], p=[0.5, 0.33, 0.17]))
        weights = np.array(list(FINDING_WEIGHTS.values()))
        kinds = rng.choice(FINDING_KINDS, size=count, replace=False, p=weights / weights.sum())
        findings = [_sample_finding(str(kind), rng) for kind in kinds]
    devices = []
    if rng.random() < DEVICE_PROBABILITY:
        count = int(rng.choice([1, 2], p=[0.7, 0.3]))
        devices = [Device(str(k), str(rng.choice(SIDES))) for k in rng.choice(DEVICE_KINDS, count, replace=False)]
    view = "AP" if (devices and rng.random() < 0.7) or rng.random() < 0.25 else "PA"
    return Case(case_id, split, view, findings, devices, has_prior=bool(rng.random() < 0.3))
