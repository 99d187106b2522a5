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

Not in the reference (``ImageReportDataset(zone_view_fraction=...)``, ``--data.zone_view_fraction``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch

from afloc.text.tokenizer import is_negated

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
_RIGHT_EYE = re.compile(r"\b(right eye|od)\b", re.I)
_LEFT_EYE = re.compile(r"\b(left eye|os)\b", re.I)
LAYOUTS = ("chest", "fundus")


def fundus_region(sentence: str, eye: str | None) -> tuple[float, float, float, float] | None:
    """The image-frame box that a fundus sentence's place words name, for a ``"right"`` or ``"left"`` eye, or None.

    Named places (nasal, papillomacular, temporal to the macula, the arcades, the macula) come first, their boxes
    joined; a sentence that names none of them but names the disc ("the optic disc appears normal", "exudates
    adjacent to the optic disc") gets the disc's box. Every box but the macula's depends on the eye: with the eye
    unknown only the macula can be placed.
    """
    boxes, rest = [], sentence
    for pattern, box in FUNDUS_PLACES:  # most specific first; a matched phrase is used up ("temporal to the macula"
        if pattern.search(rest):  # is not also "the macula")
            boxes.append(box)
            rest = pattern.sub(" ", rest)
    if not boxes and FUNDUS_DISC[0].search(sentence):
        boxes = [FUNDUS_DISC[1]]
    if not boxes:
        return None
    macula = FUNDUS_PLACES[-1][1]
    if eye is None and any(b != macula for b in boxes):
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
    sentences: Sequence[str], layout: str = "chest", eye: str | None = None
) -> list[tuple[float, float, float, float] | None]:
    """Each sentence's region under a layout (``"chest"``: :func:`sentence_region`; ``"fundus"``:
    :func:`fundus_region` with ``eye``, or the eye the sentences name when it is None; pass the eye read from the
    whole report with :func:`report_eye`, since cleaning drops one-word sentences such as "OD")."""
    if layout == "chest":
        return [sentence_region(s) for s in sentences]
    if layout == "fundus":
        eye = eye or report_eye(" . ".join(sentences))
        return [fundus_region(s, eye) for s in sentences]
    raise ValueError(f"unknown zone-view layout {layout!r}; expected one of {LAYOUTS}")


def _places_something(sentence: str, layout: str) -> bool:
    if layout == "chest":
        return any(p.search(sentence) for p in _SIDE_WORDS.values()) or bool(_BOTH.search(sentence))
    return any(p.search(sentence) for p, _ in FUNDUS_PLACES) or bool(FUNDUS_DISC[0].search(sentence))


def zone_view(
    sentences: Sequence[str], rng: random.Random, layout: str = "chest", eye: str | None = None
) -> tuple[tuple[float, float, float, float], str] | None:
    """Draw one located sentence of a report: its region and the view's caption, or None if none is located.

    The caption is the drawn sentence followed by the report's sentences that name no place (chest: no side;
    fundus: no place and not the disc), in report order: what the view hides is not described. ``eye``: see
    :func:`sentence_regions`.
    """
    regions = sentence_regions(sentences, layout, eye)
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
    if any(pattern.search(s) for s in sentences for pattern, _ in FUNDUS_PLACES):
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
