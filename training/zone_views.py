"""Zone views: a frontal chest film shown only where one report sentence says its finding is.

A sentence such as "patchy opacities in the right lower zone" names a side and a zone. On a frontal film these
lie at roughly fixed places of the image (the patient's right is the image's left), so the sentence alone, with no
mask or box, gives a generous region of the image that holds what it describes. A zone view keeps that region,
fills the rest with mid grey (0 after normalisation) and pairs the view with that sentence plus the report's
sentences that name no side. The contrastive losses then see smaller bags: the words of the sentence have fewer
regions to choose from, and every one of them is where the report says. Nothing here reads an annotation: the
region comes from the text and a fixed frontal-film layout, so it applies to real reports as written. A report
that locates nothing gets a view of a random side and zone with its usual caption, so that a partly hidden film
does not by itself say that the report names a place.

Not in the reference (``ImageReportDataset(zone_view_fraction=...)``, ``--data.zone_view_fraction``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch

# image-frame extents (fractions of the pad-resized square) of each side and zone on a frontal film; generous and
# overlapping, so that a finding near a zone's edge stays inside its view
SIDE_X = {"right": (0.0, 0.56), "left": (0.44, 1.0)}  # the patient's right lung is on the image's left
ZONE_Y = {"upper": (0.05, 0.5), "mid": (0.3, 0.75), "lower": (0.5, 1.0)}
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


def zone_view(sentences: Sequence[str], rng: random.Random) -> tuple[tuple[float, float, float, float], str] | None:
    """Draw one located sentence of a report: its region and the view's caption, or None if none is located.

    The caption is the drawn sentence followed by the report's sentences that name no side, in report order.
    """
    located = [(i, box) for i, s in enumerate(sentences) if (box := sentence_region(s)) is not None]
    if not located:
        return None
    chosen, box = located[rng.randrange(len(located))]
    sided = {i for i, s in enumerate(sentences) if any(p.search(s) for p in _SIDE_WORDS.values()) or _BOTH.search(s)}
    rest = [s for i, s in enumerate(sentences) if i != chosen and i not in sided]
    return box, ". ".join([sentences[chosen], *rest])


def random_region(rng: random.Random) -> tuple[float, float, float, float]:
    """One side at one zone or at every height, drawn at random: the view of a report that locates nothing, so that
    a partly hidden film does not by itself say "this report names a place"."""
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
