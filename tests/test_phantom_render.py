"""PhantomCXR renderer: determinism, value ranges, masks and boxes, laterality, finding appearance, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from training.phantoms.render import render_case, render_case_with_anatomy
from training.phantoms.schema import DEVICE_KINDS, Case, Device, Finding, sample_case

SIZE = 192  # not a power of two on purpose; the generator is also exercised at 128 and 256 below

LATERAL_FINDINGS = [
    Finding("consolidation", zone="upper", severity="moderate", pattern="lobar"),
    Finding("consolidation", zone="lower", severity="large", pattern="patchy"),
    Finding("atelectasis", zone="lower", severity="severe", pattern="plate"),
    Finding("atelectasis", zone="middle", severity="mild", pattern="linear"),
    Finding("pleural_effusion", zone="basal", severity="small"),
    Finding("pneumothorax", zone="apical", severity="small"),
    Finding("pneumothorax", zone="lateral", severity="large"),
    Finding("nodule", zone="middle", size_cm=0.8),
    Finding("mass", zone="upper", size_cm=6.5),
]


def _case(*findings: Finding, view: str = "PA", devices: tuple[Device, ...] = ()) -> Case:
    return Case("test", "test", view, list(findings), list(devices))


def _with_side(template: Finding, side: str) -> Finding:
    return Finding(template.kind, side, template.zone, template.severity, template.pattern, template.size_cm)


def _random_cases(n: int, size: int, seed: int = 0):
    for index in range(n):
        rng = np.random.default_rng([seed, index])
        case = sample_case(rng, f"case_{index}", "test")
        image, anatomy = render_case_with_anatomy(case, size, rng)
        yield case, image, anatomy


def _reference_boxes(mask: np.ndarray) -> list[list[float]]:
    """Naive reference: scipy's 8-connected labelling, one [x, y, w, h] box per component."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    return sorted(
        [float(c.start), float(r.start), float(c.stop - c.start), float(r.stop - r.start)]
        for r, c in ndimage.find_objects(labels)
    )


def test_same_seed_same_image_and_masks():
    def render(seed: int):
        rng = np.random.default_rng(seed)
        case = sample_case(rng, "a", "test")
        while not case.findings or not case.devices:  # make sure the comparison covers findings and devices
            case = sample_case(rng, "a", "test")
        return case, render_case(case, SIZE, rng)

    (case_a, image_a), (case_b, image_b) = render(3), render(3)
    assert image_a.tobytes() == image_b.tobytes()
    for finding_a, finding_b in zip(case_a.findings, case_b.findings, strict=True):
        assert np.array_equal(finding_a.mask, finding_b.mask)
        assert finding_a.boxes == finding_b.boxes
    assert render(4)[1].tobytes() != image_a.tobytes()


@pytest.mark.parametrize("size", [128, SIZE, 256])
def test_image_is_float32_unit_range(size):
    for _, image, _ in _random_cases(4, size, seed=size):
        assert image.dtype == np.float32 and image.shape == (size, size)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert image.std() > 0.1  # a film, not a flat field


def test_masks_non_empty_and_boxes_are_the_bounding_boxes_of_their_parts():
    n_findings = 0
    for case, _, _ in _random_cases(40, SIZE, seed=1):
        for finding in case.findings:
            n_findings += 1
            mask = finding.mask
            assert mask.dtype == np.bool_ and mask.shape == (SIZE, SIZE)
            assert mask.any(), finding
            assert sorted(finding.boxes) == _reference_boxes(mask), finding
            for x, y, w, h in finding.boxes:
                assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
    assert n_findings > 30


def test_anatomy_landmarks_are_in_frame():
    for _, _, anatomy in _random_cases(10, SIZE, seed=2):
        for side, lung in anatomy.lung.items():
            columns = np.nonzero(lung)[1]
            assert columns.size > 0.03 * SIZE * SIZE
            # the patient's right lung is on the image's left
            assert (columns.mean() < SIZE / 2) == (side == "right")
            assert not lung[[0, -1], :].any() and not lung[:, [0, -1]].any()  # the lungs are fully in view


@pytest.mark.parametrize("template", LATERAL_FINDINGS, ids=lambda f: f"{f.kind}-{f.zone}")
@pytest.mark.parametrize("side", ["right", "left"])
def test_laterality_patient_right_is_image_left(template, side):
    for seed in range(4):
        finding = _with_side(template, side)
        render_case(_case(finding, view="AP" if seed % 2 else "PA"), SIZE, np.random.default_rng(seed))
        centroid = np.nonzero(finding.mask)[1].mean()
        assert (centroid < SIZE / 2) == (side == "right"), (seed, centroid)


@pytest.mark.parametrize(
    "finding",
    [Finding("pleural_effusion", "bilateral", "basal", "moderate"), Finding("edema", "bilateral", "perihilar", "mild")],
    ids=lambda f: f.kind,
)
def test_bilateral_findings_have_one_box_per_side(finding):
    for seed in range(6):
        render_case(_case(finding), SIZE, np.random.default_rng(seed))
        assert len(finding.boxes) == 2
        centres = sorted(x + w / 2 for x, _, w, _ in finding.boxes)
        assert centres[0] < SIZE / 2 < centres[1]


def _inside_vs_mirror(finding: Finding, seed: int) -> tuple[float, float]:
    image, anatomy = render_case_with_anatomy(_case(finding), SIZE, np.random.default_rng(seed))
    mirrored = anatomy.mirror_px(finding.mask) & ~finding.mask
    return float(image[finding.mask].mean()), float(image[mirrored].mean())


@pytest.mark.parametrize("zone", ["apical", "lateral"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_pneumothorax_is_darker_than_the_mirrored_lung(side, zone):
    for seed in range(4):
        inside, mirror = _inside_vs_mirror(Finding("pneumothorax", side, zone, "moderate"), seed)
        assert inside < mirror, (seed, inside, mirror)


@pytest.mark.parametrize("side", ["right", "left"])
def test_effusion_is_brighter_than_the_mirrored_base(side):
    for seed in range(4):
        inside, mirror = _inside_vs_mirror(Finding("pleural_effusion", side, "basal", "moderate"), seed)
        assert inside > mirror + 0.05, (seed, inside, mirror)


@pytest.mark.parametrize(
    "finding",
    [Finding("consolidation", "right", "lower", "moderate", "lobar"), Finding("nodule", "left", "upper", size_cm=2.0)],
    ids=lambda f: f.kind,
)
def test_opacities_brighten_the_same_patient(finding):
    # Same seed with and without the finding: same patient and exposure (drawn before the findings).
    for seed in range(3):
        with_finding = render_case(_case(finding), SIZE, np.random.default_rng(seed))
        without = render_case(_case(), SIZE, np.random.default_rng(seed))
        assert with_finding[finding.mask].mean() > without[finding.mask].mean() + 0.02


def test_nodule_mask_matches_its_physical_size():
    for seed, size_cm in enumerate([0.8, 1.5, 2.5]):
        finding = Finding("nodule", "right", "middle", size_cm=size_cm)
        _, anatomy = render_case_with_anatomy(_case(finding), 256, np.random.default_rng(seed))
        diameter_px = 2 * np.sqrt(finding.mask.sum() / np.pi)
        assert diameter_px == pytest.approx(size_cm * anatomy.px_per_cm, rel=0.3)


@pytest.mark.parametrize("kind", DEVICE_KINDS)
def test_devices_change_the_image_but_not_the_masks(kind):
    finding = Finding("consolidation", "right", "middle", "moderate", "patchy")
    plain_finding = Finding(**{k: getattr(finding, k) for k in ("kind", "side", "zone", "severity", "pattern")})
    with_device = render_case(_case(finding, devices=(Device(kind, "left"),)), SIZE, np.random.default_rng(5))
    plain = render_case(_case(plain_finding), SIZE, np.random.default_rng(5))
    assert np.count_nonzero(with_device - plain > 0.08) > 40  # a bright (radio-opaque) line or box
    assert np.array_equal(finding.mask, plain_finding.mask)


def test_cardiomegaly_mask_is_the_enlarged_heart_left_of_the_patient_midline():
    for seed in range(4):
        finding = Finding("cardiomegaly", None, None, "moderate")
        _, anatomy = render_case_with_anatomy(_case(finding), SIZE, np.random.default_rng(seed))
        _, normal = render_case_with_anatomy(_case(), SIZE, np.random.default_rng(seed))
        columns = np.nonzero(finding.mask)[1]
        midline = anatomy.midline_px()
        assert midline < columns.mean() < midline + 0.15 * SIZE  # central, shifted to the image right
        assert np.array_equal(finding.mask, anatomy.heart_mask)
        assert finding.mask.sum() > 1.15 * normal.heart_mask.sum()
        assert len(finding.boxes) == 1


def test_invalid_inputs_raise_value_error():
    with pytest.raises(ValueError, match="size"):
        render_case(_case(), 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown finding kind"):
        render_case(_case(Finding("fracture", "left")), SIZE, np.random.default_rng(0))
    with pytest.raises(ValueError, match="view"):
        render_case(_case(view="lateral"), SIZE, np.random.default_rng(0))


def test_render_speed_smoke():
    rng = np.random.default_rng(0)
    cases = [sample_case(rng, f"s{i}", "train") for i in range(20)]
    start = time.perf_counter()
    for case in cases:
        render_case(case, 256, rng)
    assert time.perf_counter() - start < 2.0
