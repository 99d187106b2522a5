"""Mirrored training images whose captions are mirrored with them (chest films, fundus photographs).

A horizontal flip swaps the sides that reports name, so it is only true to the report when the words are swapped
with it:

* **chest** (``layout="chest"``): the patient's right and left swap ("opacities in the right lower zone" becomes
  "... left lower zone"). A report that names an anatomy without a mirror image (the middle lobe, the lingula, a
  lobe abbreviation such as "RML") cannot be mirrored: :func:`mirror_caption` returns None for it.
* **fundus** (``layout="fundus"``): a mirrored right eye looks like a left eye (the disc moves to the other side
  of the macula), so the eye swaps ("right eye" <-> "left eye", "OD" <-> "OS"); nasal, temporal, superior and
  inferior name the anatomy, which moves with the image, and stay.

Mirroring serves two ends (``ImageReportDataset(mirror_fraction=..., mirror_pairs=...)``):

* augmentation: a share of the training images is mirrored, captions swapped (twice the layouts per photograph);
* **mirror pairs**: a batch holds an image and its own mirror, whose captions differ only in the side (or eye)
  words. Everything else in the two images is the same, so the contrastive losses can tell the pair apart only by
  where the finding (or the disc) lies in the image: a hard negative that asks for the location, from the words
  alone, with no mask or box.

Not in the reference.
"""

from __future__ import annotations

import re

import torch

LAYOUTS = ("chest", "fundus")

_CHEST_SIDES = re.compile(r"\b(right|left)\b", re.I)
_CHEST_UNMIRRORABLE = re.compile(
    r"\b(middle lobe|lingula\w*|rml|rll|rul|lll|lul|dextro\w*|levo\w*|situs)\b", re.I
)  # no counterpart on the other side, or a side word this module does not swap
_FUNDUS_EYES = re.compile(r"\b(right eye|left eye|od|os)\b", re.I)
_SWAP = {"right": "left", "left": "right", "right eye": "left eye", "left eye": "right eye", "od": "os", "os": "od"}


def _same_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _swap(match: re.Match) -> str:
    text = match.group(0)
    return _same_case(_SWAP[text.lower()], text)


def mirror_caption(text: str, layout: str = "chest") -> str | None:
    """The text of the horizontally mirrored image, or None when it cannot be written (chest only: see module doc).

    >>> mirror_caption("Patchy opacities in the right lower zone. Left lung clear.")
    'Patchy opacities in the left lower zone. Right lung clear.'
    >>> mirror_caption("EYE: OD. Exudates temporal to the macula.", "fundus")
    'EYE: OS. Exudates temporal to the macula.'
    """
    if layout == "chest":
        if _CHEST_UNMIRRORABLE.search(text):
            return None
        return _CHEST_SIDES.sub(_swap, text)
    if layout == "fundus":
        return _FUNDUS_EYES.sub(_swap, text)
    raise ValueError(f"unknown mirror layout {layout!r}; expected one of {LAYOUTS}")


def mirror_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A box ``(x0, y0, x1, y1)`` in image fractions after a horizontal flip."""
    x0, y0, x1, y1 = box
    return (1.0 - x1, y0, 1.0 - x0, y1)


def mirror_image(image: torch.Tensor) -> torch.Tensor:
    """A ``[..., H, W]`` image flipped left to right."""
    return image.flip(-1)


def mirror_pair_order(
    order: list[int], size: int, batch_size: int, pairable: list[bool], pairs_per_batch: int, offset: int
) -> list[int]:
    """Batches of ``order`` (sample indices, possibly epoch-offset) with up to ``pairs_per_batch`` pairs each.

    Each batch of ``batch_size`` consecutive indices keeps its first ``pairs_per_batch`` pairable samples, adds the
    mirror of each (the same index plus ``offset``, which :class:`training.data.ImageReportDataset` reads as
    "mirrored") right after it, and fills the rest with the batch's other samples; the samples that no longer fit
    are left out of this epoch. A trailing partial batch is dropped.
    """
    out: list[int] = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        batch = order[start : start + batch_size]
        chosen = [i for i in batch if pairable[i % size]][:pairs_per_batch]
        paired = set(chosen)
        rest = [i for i in batch if i not in paired][: batch_size - 2 * len(chosen)]
        for i in chosen:
            out += [i, i + offset]
        out += rest
    return out
