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
from typing import NamedTuple

import torch
import torch.nn.functional as F

from afloc.modeling.losses import box_cells
from afloc.text.tokenizer import is_negated, normalize_prompt

from .realdata.fundus import FINE_REGIONS, FOVEA_OFFSET
from .zone_views import DISC_DIAMETER, FUNDUS_DISC, fundus_place_names, sentence_regions

# the findings a fundus report sentence speaks of: (category, the prompt that names it, the words that name it)
FUNDUS_FINDINGS: tuple[tuple[str, str, re.Pattern], ...] = (
    ("optic_disc", "optic disc", FUNDUS_DISC[0]),
    ("hard_exudates", "hard exudates", re.compile(r"exudat", re.I)),
    ("haemorrhage", "haemorrhage", re.compile(r"h(a)?emorrhag", re.I)),
)
PLACE_CATEGORIES = tuple(name for name, _, _ in FUNDUS_FINDINGS)  # the findings place targets speak of, in order
MAX_PLACES = 8  # positive bags kept per report (the generated reports place at most 6)
# the places a cell can be labelled with: training.realdata.fundus's ETDRS subfields, then its coarse regions
COARSE_PLACES = (
    "peripapillary", "macula", "superonasal", "inferonasal", "nasal_to_disc", "papillomacular", "temporal_to_macula",
    "superotemporal_arcade", "inferotemporal_arcade",
)  # fmt: skip
PLACE_NAMES = (*FINE_REGIONS, *COARSE_PLACES)
# how a bag's cells are chosen: "box", each place's anchored box (zone_views.anchored_box, with its margin); "fine",
# the cells that training.realdata.fundus.fine_region labels with a named place (the ETDRS subfields within three
# disc diameters of the fovea, its coarse regions beyond); "coarse", those that region_of labels so
PLACE_CELLS = ("box", "fine", "coarse")
_LABELLED = {"fine": frozenset(PLACE_NAMES) - {"macula"}, "coarse": frozenset(COARSE_PLACES)}  # names each gives


class Place(NamedTuple):
    """One placed mention of a finding: its category's index, its anchored box and the places it names."""

    category: int
    box: tuple[float, float, float, float]
    names: tuple[str, ...]


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
) -> tuple[list[Place], list[bool]]:
    """What a fundus report's cleaned sentences say is where.

    Returns ``(places, ruled_out)``: ``places`` lists a :class:`Place` (category index, box ``(x0, y0, x1, y1)`` in
    image fractions, place names) for each placed mention (at most ``max_places``), ``ruled_out[c]`` says whether
    the cells outside category ``c``'s places are known to hold none of it (True when the report denies or never
    names it, or places it; False when it names it only somewhere unsaid). ``summaries=False`` reads every unplaced
    mention as a finding somewhere unsaid, even beside placed ones (the reading of ``supervised_upper_bound.py
    --supervision zones``, whose recorded results used it). ``eye`` and ``disc``: see
    :func:`training.zone_views.fundus_region` (without ``disc``, the fixed frame of a macula-centred photograph).
    """
    regions = sentence_regions(sentences, "fundus", eye, disc)
    places: list[Place] = []
    unplaced: set[str] = set()
    dropped: set[str] = set()
    for sentence, region in zip(sentences, regions, strict=True):
        if is_negated(sentence):  # "no hard exudates": rules the finding out, places nothing
            continue
        for name in sentence_classes(sentence, categories):
            if region is None:
                unplaced.add(name)
            elif len(places) < max_places:
                places.append(Place(list(categories).index(name), region, tuple(fundus_place_names(sentence))))
            else:  # a place past the cap is kept out of the bags, so its cells cannot be ruled out either
                dropped.add(name)
    placed = {categories[place.category] for place in places}
    return places, [
        name not in dropped and (name not in unplaced or (summaries and name in placed)) for name in categories
    ]


def place_tensors(
    places: Sequence[Place],
    ruled_out: Sequence[bool],
    max_places: int,
    disc: tuple[float, float] | None = None,
    eye: str | None = None,
    cells: str = "box",
) -> dict[str, torch.Tensor]:
    """One report's :func:`report_places` as fixed-size tensors (a batch stacks them): ``place_boxes
    [max_places, 4]``, ``place_class [max_places]`` (-1 = no place), ``place_ruled_out [C]``, ``place_names
    [max_places, len(PLACE_NAMES)]`` and ``place_anchor [4]``.

    ``cells`` (:data:`PLACE_CELLS`): with ``"fine"`` or ``"coarse"``, and the photograph's ``disc`` (fractions of
    the square) and ``eye`` (None: the disc's side), a bag whose every place that labelling gives is kept as its
    place names (:func:`place_masks` then takes exactly the cells so labelled); any other bag keeps its box.
    ``place_anchor``: the disc's x and y, the image direction of the nose (+1 right eye, -1 left) and the labelling
    (1 fine, 2 coarse; 0 none)."""
    if cells not in PLACE_CELLS:
        raise ValueError(f"place cells must be one of {PLACE_CELLS}, got {cells!r}")
    exact = cells != "box" and disc is not None
    boxes = torch.zeros(max_places, 4)
    classes = torch.full((max_places,), -1, dtype=torch.long)
    names = torch.zeros(max_places, len(PLACE_NAMES), dtype=torch.bool)
    for k, place in enumerate(places[:max_places]):
        boxes[k], classes[k] = torch.tensor(place.box), place.category
        if exact and place.names and set(place.names) <= _LABELLED[cells]:
            names[k, [PLACE_NAMES.index(n) for n in place.names]] = True
    anchor = torch.zeros(4)
    if exact:
        eye = eye or ("right" if disc[0] > 0.5 else "left")
        anchor = torch.tensor([disc[0], disc[1], 1.0 if eye == "right" else -1.0, PLACE_CELLS.index(cells)])
    return {
        "place_boxes": boxes,
        "place_class": classes,
        "place_ruled_out": torch.tensor(list(ruled_out)),
        "place_names": names,
        "place_anchor": anchor,
    }


def no_places(categories: int, max_places: int) -> dict[str, torch.Tensor]:
    """The tensors of an image that teaches no place (shown through a view): no bag, nothing ruled out."""
    return place_tensors([], [False] * categories, max_places)


def place_labels(anchor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, height, width]`` index into :data:`PLACE_NAMES` of each grid cell's centre, labelled as
    :func:`training.realdata.fundus.fine_region` (``anchor[:, 3]`` = 1) or ``region_of`` (2) label a point, on a
    photograph whose disc is at ``anchor[:, :2]`` (fractions of the square) with the nose toward ``anchor[:, 2]``,
    the disc diameter :data:`training.zone_views.DISC_DIAMETER` and the fovea where ``fovea_from_disc`` puts it."""
    a = anchor.float()
    dx, dy, nasal, labelling = (a[:, k, None, None] for k in range(4))
    x = ((torch.arange(width, device=a.device) + 0.5) / width)[None, None, :]
    y = ((torch.arange(height, device=a.device) + 0.5) / height)[None, :, None]
    dd = DISC_DIAMETER
    fx, fy = dx - nasal * FOVEA_OFFSET[0] * dd, dy + FOVEA_OFFSET[1] * dd
    index = {name: torch.tensor(PLACE_NAMES.index(name), device=a.device) for name in PLACE_NAMES}
    # region_of, its rules in reverse order of precedence
    up, below, temporal = (y - dy) / dd, (y - fy) / dd, (fx - x) * nasal / dd
    coarse = torch.where(below < 0, index["superotemporal_arcade"], index["inferotemporal_arcade"])
    coarse = torch.where((below.abs() < 0.75) & (temporal <= 0.5), index["papillomacular"], coarse)
    coarse = torch.where((temporal > 0.5) & (below.abs() < 1.5), index["temporal_to_macula"], coarse)
    beyond_disc = torch.where(up < -0.75, index["superonasal"], torch.where(up > 0.75, index["inferonasal"],
                                                                            index["nasal_to_disc"]))  # fmt: skip
    coarse = torch.where((x - dx) * nasal > 0.5 * dd, beyond_disc, coarse)
    near_disc = torch.hypot(x - dx, y - dy) <= dd
    coarse = torch.where(near_disc, index["peripapillary"], coarse)
    coarse = torch.where(torch.hypot(x - fx, y - fy) <= dd, index["macula"], coarse)
    # fine_region: the ETDRS subfields within three disc diameters of the fovea, region_of beyond
    across, down = (x - fx) * nasal / dd, below
    radius = torch.hypot(across, down)
    inner = radius <= 1.5
    vertical = down.abs() >= across.abs()
    sector = torch.where(
        vertical,
        torch.where(down < 0, torch.where(inner, index["inner_superior"], index["outer_superior"]),
                    torch.where(inner, index["inner_inferior"], index["outer_inferior"])),
        torch.where(across > 0, torch.where(inner, index["inner_nasal"], index["outer_nasal"]),
                    torch.where(inner, index["inner_temporal"], index["outer_temporal"])),
    )  # fmt: skip
    fine = torch.where(radius <= 3.0, sector, coarse)
    fine = torch.where(near_disc, index["peripapillary"], fine)
    fine = torch.where(radius <= 0.5, index["centre"], fine)
    return torch.where(labelling == 1, fine, coarse)


def place_masks(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    ruled_out: torch.Tensor,
    height: int,
    width: int,
    names: torch.Tensor | None = None,
    anchor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bags ``[B, K, h, w]`` and ruled-out cells ``[B, C, h, w]`` from a batch of :func:`place_tensors`: a category
    that is ruled out loses every cell outside its own bags. A bag with place ``names`` is the cells
    :func:`place_labels` labels with one of them (when that holds none, as a disc's bag on a coarse grid may, its
    box's cells); any other, its box's cells."""
    bags = box_cells(boxes, height, width)
    if names is not None and anchor is not None and bool(names.any()):
        labels = F.one_hot(place_labels(anchor, height, width), len(PLACE_NAMES)).bool()  # [B, h, w, P]
        exact = (labels[:, None] & names[:, :, None, None, :]).any(dim=-1)  # [B, K, h, w]
        use = names.any(dim=-1) & exact.flatten(2).any(dim=2)  # a place with no cell centre on this grid: its box
        bags = torch.where(use[:, :, None, None], exact, bags)
    bags = bags & (classes >= 0)[:, :, None, None]
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
