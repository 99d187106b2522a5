"""What a report says is where: place targets read from report text, and the loss that teaches them.

A fundus report sentence such as "hard exudates in the inner temporal subfield" names a finding and a place. With
the optic disc found in the photograph's own pixels (:func:`training.zone_views.find_disc`) the place is a region of
this photograph (:func:`training.zone_views.fundus_region`). Read over the whole report this gives, per finding:

* **positive bags**: each placed sentence's region, where the finding's map should be warm;
* **ruled-out cells**: everywhere, for a finding the report denies ("no hard exudates") or never names; outside
  every named region, for a finding the report places; nothing, for a finding named only somewhere unsaid ("some
  haemorrhages are seen"). An unplaced mention of a finding that the report also places is read as a summary (the
  impression line "diabetic retinopathy with exudates and haemorrhages" that follows the placed findings) and
  rules nothing back in.

:func:`place_loss` turns these into a loss on per-finding cell logits: each bag pooled by log-sum-exp (``r`` = 1 is
close to the bag's mean, so the whole named place should be warm; large ``r`` is close to its maximum) against 1,
and each ruled-out cell against 0, by binary cross-entropy. ``benchmarks/supervised_upper_bound.py --supervision
zones`` trains a free classifier head with it; training's ``--model.place_weight`` (:mod:`training.system`) trains
the AFLoc model's own heatmaps with it, the cosine of each finding's prompt vector with the deep map. Nothing here
reads an annotation: only the text and, for the anchor, the pixels.

Not in the reference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from afloc.modeling.losses import box_cells
from afloc.text.tokenizer import is_negated, normalize_prompt

from .zone_views import FUNDUS_DISC, sentence_regions

# the findings a fundus report sentence speaks of: (category, the prompt that names it, the words that name it)
FUNDUS_FINDINGS: tuple[tuple[str, str, re.Pattern], ...] = (
    ("optic_disc", "optic disc", FUNDUS_DISC[0]),
    ("hard_exudates", "hard exudates", re.compile(r"exudat", re.I)),
    ("haemorrhage", "haemorrhage", re.compile(r"h(a)?emorrhag", re.I)),
)
PLACE_CATEGORIES = tuple(name for name, _, _ in FUNDUS_FINDINGS)  # the findings place targets speak of, in order
MAX_PLACES = 8  # positive bags kept per report (the generated reports place at most 6)


def finding_prompts() -> list[str]:
    """Each of :data:`PLACE_CATEGORIES`' prompts, normalised as the predictor normalises a user's prompt."""
    return [normalize_prompt(prompt) for _, prompt, _ in FUNDUS_FINDINGS]


def prompt_cosine(patches: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` cosine of each prompt vector ``prompts [C, D]`` with each cell of ``patches [B, D, h, w]``:
    the deep-map heatmap before smoothing, and, scaled and shifted, the place loss's cell logits."""
    return torch.einsum("bdhw,cd->bchw", F.normalize(patches.float(), dim=1), F.normalize(prompts.float(), dim=1))


def sentence_classes(sentence: str, categories: Sequence[str]) -> list[str]:
    """The categories of ``categories`` a fundus report sentence speaks of: the lesions it names, or the disc when
    it names none (a sentence such as "exudates adjacent to the disc" is about the exudates)."""
    words = {name: pattern for name, _, pattern in FUNDUS_FINDINGS}
    lesions = [c for c in categories if c != "optic_disc" and c in words and words[c].search(sentence)]
    if not lesions and "optic_disc" in categories and words["optic_disc"].search(sentence):
        return ["optic_disc"]
    return lesions


def report_places(
    sentences: Sequence[str],
    categories: Sequence[str],
    eye: str | None = None,
    disc: tuple[float, float] | None = None,
    max_places: int = MAX_PLACES,
    summaries: bool = True,
) -> tuple[list[tuple[int, tuple[float, float, float, float]]], list[bool]]:
    """What a fundus report's cleaned sentences say is where.

    Returns ``(places, ruled_out)``: ``places`` lists ``(category index, (x0, y0, x1, y1))`` for each placed
    mention (image fractions; at most ``max_places``), ``ruled_out[c]`` says whether the cells outside category
    ``c``'s places are known to hold none of it (True when the report denies or never names it, or places it;
    False when it names it only somewhere unsaid). ``summaries=False`` reads every unplaced mention as a finding
    somewhere unsaid, even beside placed ones (the reading of ``supervised_upper_bound.py --supervision zones``,
    whose recorded results used it). ``eye`` and ``disc``: see :func:`training.zone_views.fundus_region` (without
    ``disc``, the fixed frame of a macula-centred photograph).
    """
    regions = sentence_regions(sentences, "fundus", eye, disc)
    places: list[tuple[int, tuple[float, float, float, float]]] = []
    unplaced: set[str] = set()
    dropped: set[str] = set()
    for sentence, region in zip(sentences, regions, strict=True):
        if is_negated(sentence):  # "no hard exudates": rules the finding out, places nothing
            continue
        for name in sentence_classes(sentence, categories):
            if region is None:
                unplaced.add(name)
            elif len(places) < max_places:
                places.append((list(categories).index(name), region))
            else:  # a place past the cap is kept out of the bags, so its cells cannot be ruled out either
                dropped.add(name)
    placed = {categories[c] for c, _ in places}
    return places, [
        name not in dropped and (name not in unplaced or (summaries and name in placed)) for name in categories
    ]


def place_tensors(
    places: Sequence[tuple[int, tuple[float, float, float, float]]], ruled_out: Sequence[bool], max_places: int
) -> dict[str, torch.Tensor]:
    """One report's :func:`report_places` as fixed-size tensors (a batch stacks them): ``place_boxes
    [max_places, 4]``, ``place_class [max_places]`` (-1 = no place) and ``place_ruled_out [C]``."""
    boxes = torch.zeros(max_places, 4)
    classes = torch.full((max_places,), -1, dtype=torch.long)
    for k, (c, box) in enumerate(places[:max_places]):
        boxes[k], classes[k] = torch.tensor(box), c
    return {"place_boxes": boxes, "place_class": classes, "place_ruled_out": torch.tensor(list(ruled_out))}


def no_places(categories: int, max_places: int) -> dict[str, torch.Tensor]:
    """The tensors of an image that teaches no place (shown through a view): no bag, nothing ruled out."""
    return place_tensors([], [False] * categories, max_places)


def place_masks(
    boxes: torch.Tensor, classes: torch.Tensor, ruled_out: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bags ``[B, K, h, w]`` and ruled-out cells ``[B, C, h, w]`` from a batch of :func:`place_tensors`: a category
    that is ruled out loses every cell outside its own bags."""
    bags = box_cells(boxes, height, width) & (classes >= 0)[:, :, None, None]
    n_classes = ruled_out.shape[1]
    one_hot = F.one_hot(classes.clamp(min=0), n_classes).bool() & (classes >= 0)[:, :, None]  # [B, K, C]
    placed = (one_hot[:, :, :, None, None] & bags[:, :, None]).any(dim=1)  # [B, C, h, w]
    return bags, ruled_out[:, :, None, None] & ~placed


def pooled_bags(
    logits: torch.Tensor, bags: torch.Tensor, bag_class: torch.Tensor, r: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each bag's logit ``[B, K]``, ``log(mean(exp(r x))) / r`` over its cells of its category's map, and which
    bags count ``[B, K]`` (a category, and at least one cell); see :func:`place_loss` for the shapes."""
    if r <= 0:
        raise ValueError(f"the pooling sharpness r must be > 0, got {r}")
    chosen = logits.gather(1, bag_class.clamp(min=0)[:, :, None, None].expand(-1, -1, *logits.shape[2:]))
    cells = torch.where(bags, r * chosen, torch.full_like(chosen, -torch.inf)).flatten(2)
    count = bags.flatten(2).sum(2)
    valid = (bag_class >= 0) & (count > 0)
    cells = torch.where(valid[:, :, None], cells, torch.zeros_like(cells))  # no -inf row: finite gradients
    pooled = (torch.logsumexp(cells, dim=2) - count.clamp(min=1).float().log()) / r
    return pooled, valid  # a bag that does not count has a meaningless value


def place_loss(
    logits: torch.Tensor, bags: torch.Tensor, bag_class: torch.Tensor, negative: torch.Tensor, r: float
) -> torch.Tensor:
    """Binary cross-entropy of each positive bag, log-sum-exp pooled (``log(mean(exp(r x))) / r`` over its cells),
    against 1, plus that of each ruled-out cell against 0.

    ``logits``: ``[B, C, h, w]`` per-category cell logits; ``bags``: ``[B, K, h, w]`` bool with their category
    ``bag_class [B, K]`` (-1 = none; an empty bag counts for nothing); ``negative``: ``[B, C, h, w]`` bool. Each part
    is a mean over what it has; a batch with neither gives 0 (with a gradient path, so that every rank runs the same
    graph).
    """
    pooled, valid = pooled_bags(logits, bags, bag_class, r)
    total = logits.sum() * 0.0
    if bool(valid.any()):
        pooled = pooled[valid]
        total = total + F.binary_cross_entropy_with_logits(pooled, torch.ones_like(pooled))
    if bool(negative.any()):
        ruled = logits[negative]
        total = total + F.binary_cross_entropy_with_logits(ruled, torch.zeros_like(ruled))
    return total
