"""What a PhantomFundus case is: which eye, which lesions, where, and how they are sampled.

A case is sampled first (:func:`sample_fundus_case`: eye, lesions, regions), then rendered
(:mod:`training.phantoms.fundus.render` draws the eye and fills each lesion's mask and boxes) and described
(:mod:`training.phantoms.fundus.reports` writes the report and each lesion's phrase).

Directions follow ophthalmic convention: *nasal* is towards the patient's nose, *temporal* towards the ear,
*superior* / *inferior* up / down. On a fundus photograph of the RIGHT eye (OD) the optic disc (nasal) is on the
image's right and the macula (temporal) on its left; a LEFT eye (OS) is the mirror image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..schema import SPLITS

# Lesion kinds (ground truth) and their sampling weights.
LESION_WEIGHTS: dict[str, float] = {
    "hard_exudates": 0.24,
    "haemorrhage": 0.26,
    "microaneurysms": 0.18,
    "cotton_wool_spots": 0.14,
    "drusen": 0.18,
}
LESION_KINDS = tuple(LESION_WEIGHTS)
EYES = ("right", "left")
VIEWS = {"right": "OD", "left": "OS"}  # manifest "view" column: the eye, as ophthalmologists write it

# Named regions (see anatomy.FundusAnatomy.sample_point for their geometry).
REGIONS = (
    "macula",
    "temporal_to_macula",
    "superotemporal_arcade",
    "inferotemporal_arcade",
    "superonasal",
    "inferonasal",
    "nasal_to_disc",
    "peripapillary",
)
# Where each kind occurs (probabilities over REGIONS, in that order). Spread on purpose: a prompt-blind model that
# knows the kind's usual place must not find it (see README, "Difficulty").
REGION_WEIGHTS: dict[str, tuple[float, ...]] = {
    "hard_exudates": (0.26, 0.14, 0.16, 0.16, 0.07, 0.07, 0.07, 0.07),
    "haemorrhage": (0.10, 0.10, 0.14, 0.14, 0.13, 0.13, 0.12, 0.14),
    "microaneurysms": (0.22, 0.14, 0.14, 0.14, 0.09, 0.09, 0.09, 0.09),
    "cotton_wool_spots": (0.0, 0.06, 0.2, 0.2, 0.12, 0.12, 0.1, 0.2),
    "drusen": (0.32, 0.2, 0.14, 0.14, 0.05, 0.05, 0.05, 0.05),
}
HAEMORRHAGE_PATTERNS = ("dot", "blot", "flame")
AMOUNTS = ("few", "several", "many")  # lesions in a cluster; "single" for one haemorrhage or spot

NORMAL_FRACTION = 0.25


@dataclass
class Lesion:
    """One lesion finding: a cluster of lesions of one kind in one region.

    Attributes:
        kind: one of :data:`LESION_KINDS`.
        region: one of :data:`REGIONS`.
        count: number of lesions drawn in the cluster (1 for a single haemorrhage or spot).
        pattern: ``"dot"`` / ``"blot"`` / ``"flame"`` for haemorrhages, ``"circinate"`` / ``"scattered"`` for hard
            exudates, ``"soft"`` / ``"hard"`` for drusen, else None.
        mask: boolean ``[H, W]`` lesion pixels, set by the renderer.
        boxes: ``[[x, y, w, h], ...]`` pixel boxes, one per group of lesions (lesions closer than a quarter disc
            diameter share a box, as annotators box clusters), set by the renderer.
        phrase: short description used as the localization prompt, set by the report writer.
    """

    kind: str
    region: str
    count: int = 1
    pattern: str | None = None
    mask: np.ndarray | None = field(default=None, repr=False)
    boxes: list[list[float]] = field(default_factory=list)
    phrase: str | None = None

    @property
    def amount(self) -> str:
        """``"single"``, ``"few"`` (2-4), ``"several"`` (5-11) or ``"many"`` (12+)."""
        if self.count == 1:
            return "single"
        return "few" if self.count <= 4 else "several" if self.count <= 11 else "many"


@dataclass
class FundusCase:
    """One synthetic fundus photograph.

    Attributes:
        case_id: unique identifier (file stem).
        split: ``"train"``, ``"val"`` or ``"test"`` (selects the phrasing vocabulary of the report).
        eye: ``"right"`` or ``"left"``.
        findings: lesions (empty for a normal study).
        cup_ratio: vertical cup-to-disc ratio (0.2-0.75; above 0.6 the report calls the cup enlarged).
        disc_box: ``[x, y, w, h]`` of the optic disc, set by the renderer (anatomy, never a lesion).
    """

    case_id: str
    split: str
    eye: str
    findings: list[Lesion]
    cup_ratio: float = 0.3
    disc_box: list[float] | None = None

    @property
    def view(self) -> str:
        return VIEWS[self.eye]

    @property
    def labels(self) -> list[str]:
        return sorted({f.kind for f in self.findings})


def _sample_lesion(kind: str, region: str, rng: np.random.Generator) -> Lesion:
    if kind == "hard_exudates":
        return Lesion(
            kind, region, int(rng.integers(4, 26)), str(rng.choice(["circinate", "scattered"], p=[0.35, 0.65]))
        )
    if kind == "haemorrhage":
        pattern = str(rng.choice(HAEMORRHAGE_PATTERNS, p=[0.35, 0.4, 0.25]))
        return Lesion(kind, region, int(rng.choice([1, 2, 3, 4, 6], p=[0.4, 0.25, 0.15, 0.1, 0.1])), pattern)
    if kind == "microaneurysms":
        return Lesion(kind, region, int(rng.integers(2, 13)))
    if kind == "cotton_wool_spots":
        return Lesion(kind, region, int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])))
    if kind == "drusen":
        return Lesion(kind, region, int(rng.integers(4, 22)), str(rng.choice(["hard", "soft"], p=[0.55, 0.45])))
    raise ValueError(f"unknown lesion kind {kind!r}; expected one of {LESION_KINDS}")


def sample_fundus_case(rng: np.random.Generator, case_id: str, split: str) -> FundusCase:
    """Sample a photograph: about a quarter normal, otherwise 1 to 3 lesions of different kinds and regions."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    eye = str(rng.choice(EYES))
    findings: list[Lesion] = []
    if rng.random() >= NORMAL_FRACTION:
        count = int(rng.choice([1, 2, 3], p=[0.5, 0.33, 0.17]))
        weights = np.array(list(LESION_WEIGHTS.values()))
        kinds = rng.choice(LESION_KINDS, size=count, replace=False, p=weights / weights.sum())
        used: set[str] = set()
        for kind in kinds:
            p = np.array(REGION_WEIGHTS[str(kind)], dtype=float)
            p[[REGIONS.index(r) for r in used]] = 0.0  # one finding per region: phrases stay unambiguous
            if p.sum() == 0:
                continue
            region = str(rng.choice(REGIONS, p=p / p.sum()))
            used.add(region)
            findings.append(_sample_lesion(str(kind), region, rng))
    cup_ratio = round(float(rng.choice([rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.75)], p=[0.85, 0.15])), 2)
    return FundusCase(case_id, split, eye, findings, cup_ratio)
