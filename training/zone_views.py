"""Zone views: an image shown only where one report sentence says its finding is (frontal chest films, fundus).

A sentence such as "patchy opacities in the right lower zone" names a side and a zone. On a frontal film these
lie at roughly fixed places of the image (the patient's right is the image's left), so the sentence alone, with no
mask or box, gives a generous region of the image that holds what it describes. A zone view keeps that region,
fills the rest with mid grey (0 after normalisation) and pairs the view with that sentence plus the report's
sentences that name no side. The contrastive losses then see smaller bags: the words of the sentence have fewer
regions to choose from, and every one of them is where the report says. Nothing here reads an annotation: the
region comes from the text and a fixed frontal-film layout, so it applies to real reports as written. A report
that locates nothing gets a view of a random side and zone with its usual caption, so that a partly hidden film
does not by itself say that the report names a place.

Fundus photographs (``layout="fundus"``) have their own layout: graders place findings relative to the disc and
the macula ("temporal to the macula", "near the superior arcade"), and with the eye that the report names ("right
eye", "OD") these are fixed parts of a macula-centred photograph too; a sentence about the disc itself ("the optic
disc appears normal") gets the disc's side. Every report names the disc, so without views the disc sentence tells
no photograph from another; in a view it tells the disc's part of the photograph from the others.

With ``anchor="disc"`` (``--data.zone_view_anchor disc``) a fundus place is measured from the optic disc found in
the photograph's own pixels (:func:`find_disc`, the brightest large red blob; no annotation) instead of a fixed
frame: the fovea lies 2.5 disc diameters temporal to it and 0.3 below, and each place is a box in disc diameters
around the fovea (:data:`ANCHORED_PLACES`), so a view follows each photograph's own layout. The ETDRS grid's
subfields that ``prepare-fundus --places fine`` writes ("in the inner temporal subfield") need it: they are about a
disc diameter wide, less than how far the fovea moves between photographs.

Not in the reference (``ImageReportDataset(zone_view_fraction=...)``, ``--data.zone_view_fraction``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch

from afloc.imaging.transforms import RETINA_LEVEL
from afloc.text.tokenizer import is_negated

from .realdata.fundus import fovea_from_disc

# image-frame extents (fractions of the pad-resized square) of each side and zone on a frontal film; generous and
# overlapping, so that a finding near a zone's edge stays inside its view
SIDE_X = {"right": (0.0, 0.56), "left": (0.44, 1.0)}  # the patient's right lung is on the image's left
ZONE_Y = {"upper": (0.05, 0.5), "mid": (0.3, 0.75), "lower": (0.5, 1.0)}
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)  # the box of an image shown whole
MAX_VIEW_AREA = 0.6  # a sentence that covers more than this (both lungs, all zones) gives no view

_SIDE_WORDS = {
    "right": re.compile(r"\bright\b", re.I),
    "left": re.compile(r"\bleft\b", re.I),
}
_BOTH = re.compile(r"\b(bilateral(ly)?|both)\b", re.I)
_ZONE_WORDS = {
    "upper": re.compile(r"\b(upper|apical|apex|apices)\b", re.I),
    "mid": re.compile(r"\b(mid|middle|perihilar)\b", re.I),
    "lower": re.compile(r"\b(lower|base|bases|basal|basilar)\b", re.I),
}


def sentence_region(sentence: str) -> tuple[float, float, float, float] | None:
    """The image-frame box ``(x0, y0, x1, y1)`` (fractions) that a sentence's side and zone words name, or None.

    A sentence names a region when it names a side ("right", "left"; "bilateral" or "both" name both); zone words
    ("upper", "mid", "lower" and their synonyms) narrow it, and no zone word means the whole height. A region larger
    than ``MAX_VIEW_AREA`` of the image (both lungs at every height) is None: it would hide nothing.
    """
    sides = [s for s, pattern in _SIDE_WORDS.items() if pattern.search(sentence)]
    if _BOTH.search(sentence):
        sides = ["right", "left"]
    if not sides:
        return None
    zones = [z for z, pattern in _ZONE_WORDS.items() if pattern.search(sentence)] or list(ZONE_Y)
    x0, x1 = min(SIDE_X[s][0] for s in sides), max(SIDE_X[s][1] for s in sides)
    y0, y1 = min(ZONE_Y[z][0] for z in zones), max(ZONE_Y[z][1] for z in zones)
    if (x1 - x0) * (y1 - y0) > MAX_VIEW_AREA:
        return None
    return (x0, y0, x1, y1)


# Fundus photographs (macula-centred, seen from the front): the places graders name, as image-frame boxes of a
# RIGHT eye (the disc, and so the nose, on the image's right); a left eye's boxes are mirrored. Fixed, generous
# extents of the pad-resized square for a 3:2 or 4:3 photograph with the fovea near the centre.
FUNDUS_PLACES: tuple[tuple[re.Pattern, tuple[float, float, float, float]], ...] = (
    (re.compile(r"\b(superonasal(ly)?|upper nasal)\b", re.I), (0.6, 0.1, 1.0, 0.5)),
    (re.compile(r"\b(inferonasal(ly)?|lower nasal)\b", re.I), (0.6, 0.5, 1.0, 0.9)),
    (re.compile(r"\bnasal to the (optic )?(disc|nerve head)\b", re.I), (0.7, 0.25, 1.0, 0.75)),
    (re.compile(r"\b(papillomacular|between the (optic )?(disc|nerve head) and the (macula|fovea))\b", re.I),
     (0.45, 0.3, 0.8, 0.7)),
    (re.compile(r"\btemporal to the (macula|fovea)\b", re.I), (0.0, 0.25, 0.45, 0.75)),
    (re.compile(r"\b(superior (temporal )?(vascular )?arcade|superotemporal)\b", re.I), (0.05, 0.1, 0.7, 0.5)),
    (re.compile(r"\b(inferior (temporal )?(vascular )?arcade|inferotemporal)\b", re.I), (0.05, 0.5, 0.7, 0.9)),
    (re.compile(r"\b(macula|macular|fovea|foveal|posterior pole)\b", re.I), (0.3, 0.3, 0.7, 0.7)),
)  # fmt: skip
FUNDUS_DISC = (re.compile(r"\b(disc|optic nerve head|papilla|peripapillary)\b", re.I), (0.55, 0.3, 0.95, 0.7))
FUNDUS_PLACE_NAMES = (  # the region of training.realdata.fundus that each FUNDUS_PLACES entry names, in order
    "superonasal", "inferonasal", "nasal_to_disc", "papillomacular", "temporal_to_macula", "superotemporal_arcade",
    "inferotemporal_arcade", "macula",
)  # fmt: skip
_DIRECTIONS = "superior|inferior|nasal|temporal"
# the ETDRS grid's subfields (training.realdata.fundus.FINE_REGIONS); matched before the places above, so that
# "just temporal of the fovea" is not also "the fovea"
FUNDUS_FINE_PLACES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\b(centre of the (macula|fovea)|central subfield|centred on the fovea)\b", re.I), "centre"),
    *((re.compile(rf"\b(inner {d} subfield|just {d} of the fovea|{d} parafovea)\b", re.I), f"inner_{d}")
      for d in _DIRECTIONS.split("|")),
    *((re.compile(rf"\b(outer {d} subfield|{d} macula|{d} perifovea)\b", re.I), f"outer_{d}")
      for d in _DIRECTIONS.split("|")),
)  # fmt: skip
DISC_DIAMETER = 1 / 8  # of the pad-resized square: IDRiD's median (5-95%: 0.11-0.15)
ANCHOR_MARGIN = 0.25  # disc diameters added around each anchored place: the disc and its diameter are estimates
_FAR = 12.0  # "to the photograph's edge", in disc diameters
# each place as (across0, down0, across1, down1) in disc diameters from the fovea, across toward the nose: the
# extent of training.realdata.fundus.region_of / fine_region's place (a ring sector's bounding box)
ANCHORED_PLACES: dict[str, tuple[float, float, float, float]] = {
    "centre": (-0.5, -0.5, 0.5, 0.5),
    "inner_superior": (-1.07, -1.5, 1.07, -0.35), "inner_inferior": (-1.07, 0.35, 1.07, 1.5),
    "inner_nasal": (0.35, -1.07, 1.5, 1.07), "inner_temporal": (-1.5, -1.07, -0.35, 1.07),
    "outer_superior": (-2.13, -3.0, 2.13, -1.06), "outer_inferior": (-2.13, 1.06, 2.13, 3.0),
    "outer_nasal": (1.06, -2.13, 3.0, 2.13), "outer_temporal": (-3.0, -2.13, -1.06, 2.13),
    "macula": (-1.0, -1.0, 1.0, 1.0),
    "peripapillary": (1.5, -1.3, 3.5, 0.7),  # the disc (2.5, -0.3) and one disc diameter around it
    "nasal_to_disc": (3.0, -1.05, _FAR, 0.45), "superonasal": (3.0, -_FAR, _FAR, -1.05),
    "inferonasal": (3.0, 0.45, _FAR, _FAR), "papillomacular": (-0.5, -0.75, 3.0, 0.75),
    "temporal_to_macula": (-_FAR, -1.5, -0.5, 1.5),
    "superotemporal_arcade": (-_FAR, -_FAR, 3.0, -0.75), "inferotemporal_arcade": (-_FAR, 0.75, 3.0, _FAR),
}  # fmt: skip
ANCHORS = ("frame", "disc")


def anchored_box(place: str, disc: tuple[float, float], eye: str) -> tuple[float, float, float, float]:
    """The image-frame box (fractions, clipped to the image) of a named place on a photograph whose optic disc is
    centred at ``disc`` (fractions of the square), for a ``"right"`` or ``"left"`` eye."""
    nasal = 1.0 if eye == "right" else -1.0
    fx, fy = fovea_from_disc(disc, DISC_DIAMETER, eye)
    a0, d0, a1, d1 = ANCHORED_PLACES[place]
    xs = sorted((fx + nasal * a0 * DISC_DIAMETER, fx + nasal * a1 * DISC_DIAMETER))
    m = ANCHOR_MARGIN * DISC_DIAMETER
    x0, x1 = max(0.0, xs[0] - m), min(1.0, xs[1] + m)
    y0, y1 = max(0.0, fy + d0 * DISC_DIAMETER - m), min(1.0, fy + d1 * DISC_DIAMETER + m)
    return (x0, y0, max(x0, x1), max(y0, y1))


def _widened(box: tuple[float, float, float, float], by: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (max(0.0, x0 - by), max(0.0, y0 - by), min(1.0, x1 + by), min(1.0, y1 + by))


# every place's box in the fixed frame of a right eye: the coarse places and the disc as listed above; the ETDRS
# subfields anchored at IDRiD's median disc (0.73, 0.49 of the square) and widened by one disc diameter, about how
# far the fovea moves between photographs
_MEDIAN_DISC = (0.73, 0.49)
_FRAME_BOXES = {
    **dict(zip(FUNDUS_PLACE_NAMES, (box for _, box in FUNDUS_PLACES), strict=True)),
    "peripapillary": FUNDUS_DISC[1],
    **{name: _widened(anchored_box(name, _MEDIAN_DISC, "right"), DISC_DIAMETER) for _, name in FUNDUS_FINE_PLACES},
}


def find_disc(rgb) -> tuple[float, float]:
    """``(x, y)`` pixel centre of the optic disc of a fundus photograph ``[H, W, 3]`` in [0, 1], from its pixels
    alone: the maximum of the red channel on the retina (less a thin rim), blurred by a Gaussian of 2% of the side
    and normalised by the blurred retina mask so that the dark surround does not pull the rim down. On IDRiD's
    training photographs it lies within half a disc diameter of the annotated disc on 285 of 294
    (``benchmarks/landmark_prior.py --score-detector``)."""
    import numpy as np
    from scipy.ndimage import binary_erosion, gaussian_filter

    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"find_disc needs an RGB [H, W, 3] image, got shape {rgb.shape}")
    grey = rgb.mean(axis=2)
    retina = binary_erosion(grey > RETINA_LEVEL * np.percentile(grey, 99), iterations=4).astype(np.float32)
    if not retina.any():
        retina = np.ones_like(grey)
    sigma = 0.02 * max(rgb.shape[:2])
    blob = gaussian_filter(rgb[..., 0] * retina, sigma) / np.maximum(gaussian_filter(retina, sigma), 1e-3) * retina
    y, x = np.unravel_index(int(np.argmax(blob)), blob.shape)
    return float(x) + 0.5, float(y) + 0.5


def disc_in_tensor(tensor: torch.Tensor, mean, std) -> tuple[float, float]:
    """:func:`find_disc` on a preprocessed photograph ``[3, S, S]`` (normalised with ``mean`` / ``std``, undone
    first), as fractions of the square."""
    mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    x, y = find_disc((tensor.detach().float().cpu() * std + mean).permute(1, 2, 0).numpy())
    return x / tensor.shape[-1], y / tensor.shape[-2]


_RIGHT_EYE = re.compile(r"\b(right eye|od)\b", re.I)
_LEFT_EYE = re.compile(r"\b(left eye|os)\b", re.I)
LAYOUTS = ("chest", "fundus")


def fundus_place_names(sentence: str) -> list[str]:
    """The places a fundus sentence names (keys of :data:`ANCHORED_PLACES`), most specific first; a sentence that
    names none of them but names the disc gets ``["peripapillary"]``."""
    names, rest = [], sentence
    for pattern, name in (*FUNDUS_FINE_PLACES, *zip((p for p, _ in FUNDUS_PLACES), FUNDUS_PLACE_NAMES, strict=True)):
        if pattern.search(rest):  # a matched phrase is used up ("temporal to the macula" is not also "the macula")
            names.append(name)
            rest = pattern.sub(" ", rest)
    if not names and FUNDUS_DISC[0].search(sentence):
        names = ["peripapillary"]
    return names


def fundus_region(
    sentence: str, eye: str | None, disc: tuple[float, float] | None = None
) -> tuple[float, float, float, float] | None:
    """The image-frame box that a fundus sentence's place words name, for a ``"right"`` or ``"left"`` eye, or None.

    Named places (the ETDRS subfields, nasal, papillomacular, temporal to the macula, the arcades, the macula) come
    first, their boxes joined; a sentence that names none of them but names the disc ("the optic disc appears
    normal", "exudates adjacent to the optic disc") gets the disc's box. ``disc``: the optic disc's centre on this
    photograph (fractions of the square, :func:`find_disc`): each place is measured from it
    (:func:`anchored_box`; the eye, when unknown, is the disc's side); without it, from the fixed frame of a
    macula-centred photograph, where every box but the macula's depends on the eye (unknown: only the macula).
    """
    names = fundus_place_names(sentence)
    if not names:
        return None
    if disc is not None:
        eye = eye or ("right" if disc[0] > 0.5 else "left")
        boxes = [anchored_box(name, disc, eye) for name in names]
    else:
        boxes = [_FRAME_BOXES[name] for name in names]
        if eye is None and any(name != "macula" for name in names):
            return None
        if eye == "left":
            boxes = [(1.0 - x1, y0, 1.0 - x0, y1) for x0, y0, x1, y1 in boxes]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return None if (x1 - x0) * (y1 - y0) > MAX_VIEW_AREA else (x0, y0, x1, y1)


def report_eye(text: str) -> str | None:
    """``"right"`` or ``"left"`` when a report names one eye ("Right eye", "EYE: OD."), else None."""
    right, left = bool(_RIGHT_EYE.search(text)), bool(_LEFT_EYE.search(text))
    return "right" if right and not left else "left" if left and not right else None


def sentence_regions(
    sentences: Sequence[str], layout: str = "chest", eye: str | None = None, disc: tuple[float, float] | None = None
) -> list[tuple[float, float, float, float] | None]:
    """Each sentence's region under a layout (``"chest"``: :func:`sentence_region`; ``"fundus"``:
    :func:`fundus_region` with ``eye``, or the eye the sentences name when it is None; pass the eye read from the
    whole report with :func:`report_eye`, since cleaning drops one-word sentences such as "OD"; ``disc``: see
    :func:`fundus_region`)."""
    if layout == "chest":
        return [sentence_region(s) for s in sentences]
    if layout == "fundus":
        eye = eye or report_eye(" . ".join(sentences))
        return [fundus_region(s, eye, disc) for s in sentences]
    raise ValueError(f"unknown zone-view layout {layout!r}; expected one of {LAYOUTS}")


def _places_something(sentence: str, layout: str) -> bool:
    if layout == "chest":
        return any(p.search(sentence) for p in _SIDE_WORDS.values()) or bool(_BOTH.search(sentence))
    return _names_a_fundus_place(sentence) or bool(FUNDUS_DISC[0].search(sentence))


def _names_a_fundus_place(sentence: str) -> bool:
    return any(p.search(sentence) for p, _ in (*FUNDUS_PLACES, *FUNDUS_FINE_PLACES))


def zone_view(
    sentences: Sequence[str],
    rng: random.Random,
    layout: str = "chest",
    eye: str | None = None,
    disc: tuple[float, float] | None = None,
) -> tuple[tuple[float, float, float, float], str] | None:
    """Draw one located sentence of a report: its region and the view's caption, or None if none is located.

    The caption is the drawn sentence followed by the report's sentences that name no place (chest: no side;
    fundus: no place and not the disc), in report order: what the view hides is not described. ``eye``, ``disc``:
    see :func:`sentence_regions`.
    """
    regions = sentence_regions(sentences, layout, eye, disc)
    located = [(i, box) for i, box in enumerate(regions) if box is not None]
    if not located:
        return None
    chosen, box = located[rng.randrange(len(located))]
    rest = [s for i, s in enumerate(sentences) if i != chosen and not _places_something(s, layout)]
    return box, ". ".join([sentences[chosen], *rest])


# a fundus lesion named in a sentence
_FUNDUS_LESION = re.compile(
    r"exudat|h(a)?emorrhag|microaneurysm|cotton wool|drusen|neovasc|retinopathy|lesion|spots?\b", re.I
)


def decoy_view(
    sentences: Sequence[str], rng: random.Random, eye: str | None = None
) -> tuple[tuple[float, float, float, float], str] | None:
    """A fundus photograph whose report names no lesion, shown through a lesion place drawn at random: its region and
    caption, or None when the report names a lesion anywhere (placed or not; only denials such as "no hard exudates"
    are allowed) or has nothing to say outside the disc.

    Every fundus report names the disc, so without decoys a photograph with no lesion is always shown through the
    disc's view, and the views of the places that lesion sentences name ("temporal to the macula") come only from
    photographs with lesions: the view's shape alone then tells a lesion caption from the others. A decoy shows a
    photograph with no lesion through such a place (oriented by its eye, drawn at random when the eye is unknown),
    captioned with its sentences that name no place ("No hard exudates. No haemorrhages."): only what the view shows
    can tell it from a view of the same place with exudates. The text says the whole photograph is free of lesions,
    so the caption is true of any part of it; no annotation is read.
    """
    eye = eye or report_eye(" . ".join(sentences))
    if any(_names_a_fundus_place(s) for s in sentences):
        return None
    if any(_FUNDUS_LESION.search(s) and not is_negated(s) for s in sentences):
        return None  # a lesion named without a place ("some haemorrhages are seen") could lie inside the view
    caption = [s for s in sentences if not _places_something(s, "fundus")]
    if not caption:
        return None
    x0, y0, x1, y1 = rng.choice([box for _, box in FUNDUS_PLACES])
    if eye == "left" or (eye is None and rng.random() < 0.5):
        x0, x1 = 1.0 - x1, 1.0 - x0
    return (x0, y0, x1, y1), ". ".join(caption)


def random_region(rng: random.Random, layout: str = "chest") -> tuple[float, float, float, float]:
    """A region drawn at random (chest: one side at one zone or at every height; fundus: one of the named places,
    either eye): the view of a report that locates nothing, so that a partly hidden image does not by itself say
    "this report names a place"."""
    if layout == "fundus":
        x0, y0, x1, y1 = rng.choice([box for _, box in (*FUNDUS_PLACES, FUNDUS_DISC)])
        return (x0, y0, x1, y1) if rng.random() < 0.5 else (1.0 - x1, y0, 1.0 - x0, y1)
    x0, x1 = SIDE_X[rng.choice(sorted(SIDE_X))]
    zone = rng.choice([*sorted(ZONE_Y), "all"])
    y0, y1 = (ZONE_Y["upper"][0], ZONE_Y["lower"][1]) if zone == "all" else ZONE_Y[zone]
    return (x0, y0, x1, y1)


def apply_view(image: torch.Tensor, box: tuple[float, float, float, float], fill: float = 0.0) -> torch.Tensor:
    """A copy of a normalised ``[C, S, S]`` image with everything outside ``box`` (fractions) set to ``fill``."""
    height, width = image.shape[-2:]
    x0, y0, x1, y1 = box
    c0, c1 = round(x0 * width), round(x1 * width)
    r0, r1 = round(y0 * height), round(y1 * height)
    out = torch.full_like(image, fill)
    out[..., r0:r1, c0:c1] = image[..., r0:r1, c0:c1]
    return out
