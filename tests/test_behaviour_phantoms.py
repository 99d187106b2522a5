"""PhantomCXR draws devices and findings on the side their text names (patient's right = image left).

The image is compared with the same patient rendered without the object (same seed: the anatomy and exposure
are drawn first), so the test looks at the pixels the object added, not at the masks the renderer reports.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from training.phantoms.render import render_case, render_case_with_anatomy
from training.phantoms.reports import _device_sentence, write_report
from training.phantoms.schema import Case, Device, Finding

SIZE = 192
SIDED = re.compile(r"\b(right|left)\s+(?:chest wall|internal jugular|subclavian)")


def _added(case: Case, seed: int, threshold: float, signed: bool = True):
    """``(rows, cols, anatomy)`` of the pixels ``case`` changed against the same patient without findings/devices."""
    image, anatomy = render_case_with_anatomy(case, SIZE, np.random.default_rng(seed))
    plain = render_case(Case(case.case_id, case.split, case.view, [], []), SIZE, np.random.default_rng(seed))
    change = image - plain if signed else np.abs(image - plain)
    rows, cols = np.nonzero(change > threshold)
    assert rows.size > 20, "the object changed almost no pixel"
    return rows, cols, anatomy


def _named_side(text: str) -> str:
    words = set(re.findall(r"[a-z]+", text.lower()))
    assert len({"right", "left"} & words) == 1, text
    return "right" if "right" in words else "left"


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", ["pacemaker", "central_venous_catheter"])
def test_device_is_drawn_on_the_side_its_sentence_names(kind, side):
    """Bug class: a support device drawn on the side opposite to the one the report names (sign flip)."""
    for seed in range(6):
        sentence = _device_sentence(Device(kind, side), np.random.default_rng(seed))
        named = SIDED.search(sentence.lower())
        assert named is not None, sentence
        rows, cols, anatomy = _added(Case("d", "train", "PA", [], [Device(kind, side)]), seed, 0.08)
        if kind == "pacemaker":
            offset = cols.mean() - anatomy.midline_px()
        else:  # a line enters on its side (neck or below the clavicle) and ends in the central veins
            entry = rows <= rows.min() + 5
            offset = cols[entry].mean() - anatomy.midline_px(rows.min())
        assert (offset < 0) == (named.group(1) == "right"), (seed, sentence, offset)
        assert abs(offset) > 0.05 * SIZE, (seed, offset)


LATERAL = [
    Finding("pleural_effusion", zone="basal", severity="moderate"),
    Finding("pneumothorax", zone="apical", severity="moderate"),
    Finding("consolidation", zone="lower", severity="moderate", pattern="lobar"),
    Finding("mass", zone="upper", size_cm=5.0),
]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("template", LATERAL, ids=lambda f: f.kind)
def test_finding_is_drawn_on_the_side_its_phrase_names(template, side):
    """Bug class: a finding drawn (or its phrase written) on the wrong side of the film."""
    for seed in range(3):
        finding = Finding(template.kind, side, template.zone, template.severity, template.pattern, template.size_cm)
        case = Case("f", "train", "PA", [finding], [])
        write_report(case, np.random.default_rng(seed))
        rows, cols, anatomy = _added(case, seed, 0.05, signed=False)
        offset = cols.mean() - anatomy.midline_px()
        assert (offset < 0) == (_named_side(finding.phrase) == "right"), (seed, finding.phrase, offset)
        assert abs(offset) > 0.1 * SIZE, (seed, finding.phrase, offset)
