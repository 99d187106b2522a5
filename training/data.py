"""Image-report pairs from a manifest: dataset, sampler, collation (tokenisation in workers), data module."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from afloc.imaging.io import load_image
from afloc.imaging.transforms import Preprocessing
from afloc.text.tokenizer import (
    ReportTokenizer,
    is_negated,
    limit_sentences,
    load_tokenizer,
    report_sentences,
    sample_caption,
)

from .augment import Augmentation
from .manifest import ManifestRecord, read_manifest
from .mirror import mirror_box, mirror_caption, mirror_image, mirror_pair_order
from .place_targets import MAX_PLACES, PLACE_CATEGORIES, PLACE_CELLS, no_places, place_tensors, report_places
from .zone_views import (
    ANCHORS,
    WHOLE_IMAGE,
    apply_view,
    decoy_view,
    disc_in_tensor,
    random_region,
    report_eye,
    zone_view,
)

logger = logging.getLogger(__name__)

MIRROR_OFFSET = 1 << 40  # a sampler index at or above this asks for the sample's mirror (:mod:`training.mirror`)


def affirmed_sentences(sentences: list[str]) -> list[str]:
    """A report's cleaned sentences without the negated ones ("no hard exudates", "there are no haemorrhages",
    "without effusion"), or all of them when every sentence is negated (a normal report keeps its text)."""
    kept = [s for s in sentences if not is_negated(s)]
    return kept or list(sentences)


def _check_anchor(anchor: str, view_fraction: float, layout: str) -> None:
    if anchor not in ANCHORS:
        raise ValueError(f"zone_view_anchor must be one of {ANCHORS}, got {anchor!r}")
    if anchor == "disc" and layout != "fundus":
        raise ValueError("zone_view_anchor 'disc' is for fundus photographs (modality='fundus'); a chest film has none")
    if anchor == "disc" and view_fraction == 0:
        raise ValueError("zone_view_anchor 'disc' needs zone views: set zone_view_fraction > 0")


def _check_places(place_targets: bool, layout: str, mirroring: bool, cells: str = "box") -> None:
    if cells not in PLACE_CELLS:
        raise ValueError(f"place_cells must be one of {PLACE_CELLS}, got {cells!r}")
    if cells != "box" and not place_targets:
        raise ValueError(f"place_cells {cells!r} chooses the cells of place targets: set place_targets true")
    if place_targets and layout != "fundus":
        raise ValueError(
            "place_targets reads places relative to the optic disc and is for fundus photographs (modality='fundus')"
        )
    if place_targets and mirroring:
        raise ValueError("place_targets cannot be combined with mirroring (mirror_fraction, mirror_pairs) yet")


def _check_decoys(decoys: float, view_fraction: float, layout: str) -> None:
    if not 0.0 <= decoys <= 1.0:
        raise ValueError(f"zone_view_decoys must be in [0, 1], got {decoys}")
    if decoys and view_fraction == 0:
        raise ValueError("zone_view_decoys needs zone views: set zone_view_fraction > 0")
    if decoys and layout != "fundus":
        raise ValueError(
            "zone_view_decoys is for fundus photographs (modality='fundus'); a chest report that places nothing "
            "already gets a view of a random side and zone"
        )


class ImageReportDataset(Dataset):
    """Pad-resized, normalised images with a sampled caption of their report.

    Indices may carry the epoch (``epoch * len(self) + i``, see :class:`EpochSampler`) so that caption sampling
    is reproducible per (seed, epoch, sample) in any worker process and after resuming.

    Items are ``{"image": [3, S, S], "caption": str}`` or ``None`` for an unreadable image (counted by the
    collate function, never silently trained on). An index plus ``MIRROR_OFFSET`` gives the sample mirrored, its
    caption's sides (or eye) swapped (:mod:`training.mirror`); ``mirror_fraction`` mirrors that share of the
    samples at random (those whose text has no mirror stay as they are). With ``zone_view_masks`` an item also
    carries ``view_box``; with ``place_targets``, ``place_boxes``, ``place_class`` and ``place_ruled_out``
    (:func:`training.place_targets.place_tensors`).
    """

    def __init__(
        self,
        records: list[ManifestRecord],
        preprocessing: Preprocessing,
        full_report: bool = False,
        seed: int = 1,
        word_limit: int | None = None,
        augmentation: Augmentation | None = None,
        full_report_fraction: float = 0.0,
        zone_view_fraction: float = 0.0,
        zone_view_masks: bool = False,
        mirror_fraction: float = 0.0,
        mirror_pairs: bool = False,
        drop_negated: bool = False,
        zone_view_decoys: float = 0.0,
        zone_view_anchor: str = "frame",
        place_targets: bool = False,
        place_cells: str = "box",
    ) -> None:
        if not 0.0 <= mirror_fraction <= 1.0:
            raise ValueError(f"mirror_fraction must be in [0, 1], got {mirror_fraction}")
        if not 0.0 <= full_report_fraction <= 1.0:
            raise ValueError(f"full_report_fraction must be in [0, 1], got {full_report_fraction}")
        if not 0.0 <= zone_view_fraction <= 1.0:
            raise ValueError(f"zone_view_fraction must be in [0, 1], got {zone_view_fraction}")
        self.zone_view_fraction = zone_view_fraction
        self.zone_view_masks = zone_view_masks
        self.zone_layout = "fundus" if preprocessing.modality == "fundus" else "chest"
        _check_decoys(zone_view_decoys, zone_view_fraction, self.zone_layout)
        self.zone_view_decoys = zone_view_decoys
        _check_anchor(zone_view_anchor, zone_view_fraction, self.zone_layout)
        self.zone_view_anchor = zone_view_anchor
        self.mirroring = mirror_fraction > 0 or mirror_pairs
        self.mirror_fraction = mirror_fraction
        _check_places(place_targets, self.zone_layout, self.mirroring, place_cells)
        self.place_cells = place_cells
        # the eye is read only where views, mirrors or places need it (runs without them keep their captions)
        fundus_eyes = (zone_view_fraction > 0 or self.mirroring or place_targets) and self.zone_layout == "fundus"
        self.eyes = [report_eye(r.report) for r in records] if fundus_eyes else [None] * len(records)
        self.records = records
        self.full_report_fraction = 1.0 if full_report else full_report_fraction
        self.augmentation = augmentation
        self.sentences = [report_sentences(r.report) for r in records]
        # the whole report's sentences, denials included, before the caption rules below drop some
        self.place_sentences = self.sentences if place_targets else None
        if (
            word_limit is not None
        ):  # the authors' cap on a report's sentence list (afloc.text.tokenizer.limit_sentences)
            self.sentences = [limit_sentences(s, word_limit) if s else s for s in self.sentences]
        if drop_negated:
            self.sentences = [affirmed_sentences(s) for s in self.sentences]
        self.preprocessing = preprocessing
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def pairable(self) -> list[bool]:
        """Per record: its mirror's text differs from its own (chest: it names a side and can be mirrored;
        fundus: it names the eye), so that the record and its mirror make a pair the losses can tell apart."""
        if self.zone_layout == "fundus":
            return [eye is not None for eye in self.eyes]
        return [mirror_caption(r.report) not in (None, r.report) for r in self.records]

    def __getitem__(self, index: int) -> dict | None:
        mirrored, index = divmod(int(index), MIRROR_OFFSET)
        epoch, position = divmod(index, len(self.records))
        record = self.records[position]
        try:
            image = load_image(record.image)
        except ValueError as error:
            logger.warning("skipping %s: %s", record.image, error)
            return None
        if self.augmentation is not None:
            image = self.augmentation(image, np.random.default_rng([self.seed, epoch, position]))
        tensor, _ = self.preprocessing(image)
        rng = random.Random(f"{self.seed}:{epoch}:{position}")
        fraction = self.full_report_fraction  # no draw at 0 or 1: those runs keep their captions draw for draw
        full = fraction >= 1.0 or (fraction > 0 and rng.random() < fraction)
        caption = sample_caption(self.sentences[position], rng, full)
        box = WHOLE_IMAGE
        if self.zone_view_fraction > 0:
            view_rng = random.Random(f"{self.seed}:{epoch}:{position}:view")  # its own: captions stay draw for draw
            if view_rng.random() < self.zone_view_fraction:
                view = None
                if self.zone_view_decoys > 0:  # its own draw too: runs without decoys keep their views
                    decoy_rng = random.Random(f"{self.seed}:{epoch}:{position}:decoy")
                    if decoy_rng.random() < self.zone_view_decoys:
                        view = decoy_view(self.sentences[position], decoy_rng, self.eyes[position])
                if view is None:
                    disc = None
                    if self.zone_view_anchor == "disc":  # found in this augmented photograph's own pixels
                        disc = disc_in_tensor(tensor, self.preprocessing.mean, self.preprocessing.std)
                    view = zone_view(self.sentences[position], view_rng, self.zone_layout, self.eyes[position], disc)
                box, caption = (random_region(view_rng, self.zone_layout), caption) if view is None else view
                tensor = apply_view(tensor, box)
        if self.mirroring:
            tensor, caption, box = self._mirror(tensor, caption, box, position, epoch, bool(mirrored))
        elif mirrored:
            raise ValueError("a mirrored sample was asked of a dataset built without mirroring")
        item = {"image": tensor, "caption": caption}
        if self.zone_view_masks:
            item["view_box"] = torch.tensor(box, dtype=torch.float32)
        if self.place_sentences is not None:
            item.update(self._places(tensor, position, shown_whole=box == WHOLE_IMAGE))
        return item

    def _places(self, tensor: torch.Tensor, position: int, shown_whole: bool) -> dict[str, torch.Tensor]:
        """The place targets of a photograph shown whole (:mod:`training.place_targets`), anchored on the disc found
        in its own augmented pixels; a view teaches no place."""
        if not shown_whole:
            return no_places(len(PLACE_CATEGORIES), MAX_PLACES)
        disc = disc_in_tensor(tensor, self.preprocessing.mean, self.preprocessing.std)
        eye = self.eyes[position]
        places, ruled_out = report_places(self.place_sentences[position], PLACE_CATEGORIES, eye, disc)
        return place_tensors(places, ruled_out, MAX_PLACES, disc, eye, self.place_cells)

    def _mirror(
        self, tensor: torch.Tensor, caption: str, box: tuple, position: int, epoch: int, asked: bool
    ) -> tuple[torch.Tensor, str, tuple]:
        """The sample mirrored by the ``mirror_fraction`` draw, or the opposite of that draw when ``asked`` (the
        second of a mirror pair), if its text can be mirrored. A fundus caption first gets its report's eye when it
        lost it (cleaning drops "EYE: OD."), in every sample, so that the eye words do not by themselves say
        "mirrored"."""
        eye = self.eyes[position]
        if eye is not None and report_eye(caption) is None:
            caption = f"{eye} eye. {caption}"
        mirror_rng = random.Random(f"{self.seed}:{epoch}:{position}:mirror")
        drawn = self.mirror_fraction > 0 and mirror_rng.random() < self.mirror_fraction
        if drawn == asked:
            return tensor, caption, box
        mirrored = mirror_caption(caption, self.zone_layout)
        if mirrored is None:
            return tensor, caption, box
        return mirror_image(tensor), mirrored, mirror_box(box)


def repeat_by_label(records: list[ManifestRecord], repeats: dict[str, int]) -> list[ManifestRecord]:
    """Each record ``n`` times, ``n`` the largest of ``repeats`` over its labels (1 when it has none of them).

    Raises:
        ValueError: a label of ``repeats`` that no record carries (named, with the labels that occur).
    """
    present = {label for record in records for label in record.labels}
    missing = sorted(set(repeats) - present)
    if missing:
        raise ValueError(
            f"label_repeats names labels no training record carries: {missing}; present: {sorted(present)}"
        )
    out = []
    for record in records:
        out += [record] * max([repeats[label] for label in record.labels if label in repeats], default=1)
    return out


class EpochSampler(Sampler[int]):
    """Seeded per-epoch shuffling that is aware of DDP ranks and encodes the epoch in the index.

    Lightning calls :meth:`set_epoch` at every epoch. Each rank takes an interleaved shard of the same
    permutation (padded by wrapping so all ranks see the same number of samples).
    """

    def __init__(
        self,
        size: int,
        seed: int = 1,
        shuffle: bool = True,
        groups: list[str] | None = None,
        batch_size: int | None = None,
        same_group_fraction: float = 0.0,
        pairable: list[bool] | None = None,
        mirror_pairs: int = 0,
    ) -> None:
        if not 0.0 <= same_group_fraction <= 1.0:
            raise ValueError(f"same_group_fraction must be in [0, 1], got {same_group_fraction}")
        if same_group_fraction > 0 and (groups is None or len(groups) != size or not batch_size or not shuffle):
            raise ValueError("same-group batches need one group per sample, a batch size and shuffling")
        if mirror_pairs:
            if pairable is None or len(pairable) != size or not batch_size or not shuffle:
                raise ValueError("mirror pairs need a pairable flag per sample, a batch size and shuffling")
            if not 0 < mirror_pairs <= batch_size // 2:
                raise ValueError(f"mirror_pairs must be in [1, {batch_size // 2}] (half the batch), got {mirror_pairs}")
            if same_group_fraction > 0:
                raise ValueError("mirror pairs and same-group batches cannot be combined")
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.groups, self.batch_size, self.same_group_fraction = groups, batch_size, same_group_fraction
        self.pairable, self.mirror_pairs = pairable, mirror_pairs

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        if self.same_group_fraction > 0 or self.mirror_pairs:
            return (self.size // self.batch_size) * self.batch_size
        return math.ceil(self.size / self._rank_world()[1])

    def _grouped_order(self, generator: torch.Generator) -> torch.Tensor:
        """A permutation whose consecutive runs of ``batch_size`` are whole batches; a ``same_group_fraction`` of
        them hold samples of one group only (hard negatives: the texts of one finding differ only in where and
        how much), the rest are drawn at random from the other samples."""
        bs, batches = self.batch_size, self.size // self.batch_size
        chunks = []
        for group in sorted(set(self.groups)):
            members = torch.tensor([i for i, g in enumerate(self.groups) if g == group])
            members = members[torch.randperm(len(members), generator=generator)]
            chunks += [members[k : k + bs] for k in range(0, len(members) - bs + 1, bs)]
        wanted = min(len(chunks), round(self.same_group_fraction * batches))
        chosen = [chunks[k] for k in torch.randperm(len(chunks), generator=generator)[:wanted].tolist()]
        used = torch.zeros(self.size, dtype=torch.bool)
        for chunk in chosen:
            used[chunk] = True
        rest = torch.nonzero(~used).flatten()
        rest = rest[torch.randperm(len(rest), generator=generator)]
        chosen += [rest[k : k + bs] for k in range(0, (batches - wanted) * bs, bs)]
        order = [chosen[k] for k in torch.randperm(len(chosen), generator=generator).tolist()]
        return torch.cat(order)

    def __iter__(self) -> Iterator[int]:
        rank, world = self._rank_world()
        if self.same_group_fraction > 0:
            if world > 1:
                raise ValueError("same-group batches are implemented for one process only")
            order = self._grouped_order(torch.Generator().manual_seed(self.seed + self.epoch))
            return iter((order + self.epoch * self.size).tolist())
        if self.mirror_pairs and world > 1:
            raise ValueError("mirror pairs are implemented for one process only")
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        total = len(self) * world
        order = torch.cat([order, order[: total - self.size]]) if total > self.size else order
        offset = self.epoch * self.size if self.shuffle else 0
        indices = (order[rank::world] + offset).tolist()
        if self.mirror_pairs:  # one process and shuffled (checked above and in __init__): a whole permutation
            indices = mirror_pair_order(
                indices, self.size, self.batch_size, self.pairable, self.mirror_pairs, MIRROR_OFFSET
            )
        return iter(indices)


class Collate:
    """Stacks images and tokenises captions (runs inside DataLoader workers)."""

    def __init__(self, tokenizer: ReportTokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict | None]) -> dict:
        good = [item for item in items if item is not None]
        batch = {"skipped": len(items) - len(good), "size": len(items)}
        if good:
            batch["images"] = torch.stack([item["image"] for item in good])
            batch["text"] = self.tokenizer([item["caption"] for item in good])
            if "view_box" in good[0]:
                batch["view_boxes"] = torch.stack([item["view_box"] for item in good])
            for key in ("place_boxes", "place_class", "place_ruled_out", "place_names", "place_anchor"):
                if key in good[0]:
                    batch[key] = torch.stack([item[key] for item in good])
        return batch


class ImageReportDataModule(pl.LightningDataModule):
    """Image-report pairs from a CSV/JSONL manifest (PhantomCXR, prepared MIMIC-CXR, fundus, any corpus).

    Args:
        manifest: the manifest file (columns image, report, split). Required; no default path.
        text_model: tokenizer directory or hub id (linked to the model's text encoder by the CLI); None = MiniLM.
        image_size: pad-resize side (linked to the model's).
        batch_size: pairs per batch (per device).
        num_workers: DataLoader worker processes.
        full_report: captions are whole reports instead of the reference's random sentence subsets.
        full_report_fraction: this share of the training captions (drawn per sample and epoch) are whole reports,
            the rest sampled subsets (0 = the reference; ``full_report`` = 1). Not in the reference.
        zone_view_fraction: this share of the training films (drawn per sample and epoch) are shown only where one
            located sentence of their report says (the layout of frontal chest films or, with ``modality="fundus"``,
            of macula-centred fundus photographs; :mod:`training.zone_views`), captioned with that sentence and the
            report's sentences that name no place. 0 (default) = off. Not in the reference.
        zone_view_masks: the local losses' words and sentences attend only to the regions a view shows (each
            batch carries ``view_boxes``); without it the hidden, filled regions take part and can stand for the
            view's place. Needs ``zone_view_fraction`` > 0.
        zone_view_decoys: fundus: this share of the viewed photographs whose report places no lesion (drawn per
            sample and epoch) are shown through a lesion place drawn at random instead of the disc's view, captioned
            with their sentences that name no place (:func:`training.zone_views.decoy_view`), so that a view's place
            does not by itself say "this caption names a lesion". 0 (default) = off. Needs ``zone_view_fraction``
            > 0. Not in the reference.
        place_targets: fundus: every training photograph shown whole (not through a zone view) carries what its
            report says is where (:mod:`training.place_targets`: each placed finding's region, measured from the
            disc found in its own pixels, and the cells the report rules out), for the model's place loss
            (``--model.place_weight``). Read from the whole report, denials included; no annotation is read. Off
            (default). Not in the reference.
        place_cells: which cells a place target's bag holds (:data:`training.place_targets.PLACE_CELLS`):
            ``"box"`` (default), the place's anchored box with its margin; ``"fine"``, exactly the cells that the
            ETDRS-grid labelling of ``prepare-fundus --places fine`` gives that place (measured from the disc found
            in the pixels, as the box is); ``"coarse"``, those the coarse regions' labelling gives it. Needs
            ``place_targets``. Not in the reference.
        zone_view_anchor: fundus: where a view's place is measured from: ``"frame"`` (default), fixed boxes of a
            macula-centred photograph; ``"disc"``, the optic disc found in each photograph's own pixels (no
            annotation; :func:`training.zone_views.find_disc`), which the ETDRS subfields of ``prepare-fundus
            --places fine`` need. Needs ``zone_view_fraction`` > 0. Not in the reference.
        mirror_fraction: this share of the training images (drawn per sample and epoch) is mirrored left to right,
            its caption's side words (chest) or eye (fundus) swapped; text that cannot be mirrored (the middle lobe,
            the lingula) stays unmirrored. 0 (default) = off (:mod:`training.mirror`). Not in the reference.
        mirror_pairs: pairs per training batch of a film and its own mirror, among the films whose mirrored text
            differs (a side named; fundus: the eye named): hard negatives that differ only in where the finding or
            the disc lies. 0 (default) = off; at most half the batch; one process only. Not in the reference.
        caption_word_limit: cap each report's sentence list with the authors' rule before sampling: stop at the
            sentence where the cumulative word count equals this number (they use 5; see
            :func:`afloc.text.tokenizer.limit_sentences`). ``None`` (default) samples from every sentence.
        max_length: word pieces per caption (97).
        seed: caption sampling and shuffling seed.
        limit_train: use only the first N training records (quick runs).
        max_bad_fraction: unreadable or missing images are skipped and counted; once more than this fraction
            of the images seen (after at least ``min_seen_for_bad_check`` of them) were bad, the run stops with
            an error instead of silently training on what is left.
        min_seen_for_bad_check: images to see before the bad-image fraction is enforced.
        modality: ``cxr`` (greyscale films, replicated to three channels) or ``fundus`` (colour photographs kept
            RGB); saved with every checkpoint and export, so that the demo picks the right presets.
        mean, std: per-channel normalisation of [0, 1] pixels (default 0.5 / 0.5, the reference's [-1, 1]); for
            colour photographs, the training set's channel statistics.
        augment: training-time augmentation preset (:mod:`training.augment`).
        contrast: ``"none"`` or ``"local"`` (fundus): every image's local contrast
            (:func:`afloc.imaging.transforms.local_contrast`), in training and at inference (saved with the model).
        same_label_batches: this fraction of training batches holds films of one manifest label only (the first of
            its ``labels``), the rest are drawn at random: within such a batch the reports differ only in where and
            how much, so matching them needs the location (not in the reference; 0 = off).
        label_repeats: ``{label: n}``: each training record that carries one of these manifest labels appears n
            times per epoch (the largest n among its labels), each time with its own caption draw and
            augmentation: a rare finding is seen more often (e.g. ``{"active_tb": 3}``). Every label named must
            occur in the training split. None (default) = each record once. Not in the reference.
        drop_negated: training captions leave out negated sentences ("No hard exudates.", "There is no pleural
            effusion.") of a report that has any other sentence (:func:`affirmed_sentences`): a negated finding's
            words name something the image does not show, and the word loss would still look for a region to match
            them. Off (default) = the reference. Not in the reference.
    """

    def __init__(
        self,
        manifest: str,
        text_model: str | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 2,
        full_report: bool = False,
        max_length: int = 97,
        seed: int = 1,
        limit_train: int | None = None,
        max_bad_fraction: float = 0.01,
        min_seen_for_bad_check: int = 16,
        caption_word_limit: int | None = None,
        modality: str = "cxr",
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        augment: str = "none",
        contrast: str = "none",
        same_label_batches: float = 0.0,
        full_report_fraction: float = 0.0,
        zone_view_fraction: float = 0.0,
        zone_view_masks: bool = False,
        mirror_fraction: float = 0.0,
        mirror_pairs: int = 0,
        label_repeats: dict[str, int] | None = None,
        drop_negated: bool = False,
        zone_view_decoys: float = 0.0,
        zone_view_anchor: str = "frame",
        place_targets: bool = False,
        place_cells: str = "box",
    ) -> None:
        super().__init__()
        layout = "fundus" if modality == "fundus" else "chest"
        _check_places(place_targets, layout, mirror_fraction > 0 or mirror_pairs, place_cells)
        _check_decoys(zone_view_decoys, zone_view_fraction, layout)
        _check_anchor(zone_view_anchor, zone_view_fraction, layout)
        for label, times in (label_repeats or {}).items():
            if isinstance(times, bool) or not isinstance(times, int) or times < 1:
                raise ValueError(f"label_repeats[{label!r}] must be a whole number >= 1, got {times!r}")
        if not 0.0 <= mirror_fraction <= 1.0:
            raise ValueError(f"mirror_fraction must be in [0, 1], got {mirror_fraction}")
        if not 0 <= mirror_pairs <= batch_size // 2:
            raise ValueError(f"mirror_pairs must be in [0, {batch_size // 2}] (half the batch), got {mirror_pairs}")
        if mirror_pairs and same_label_batches:
            raise ValueError("mirror_pairs and same_label_batches cannot be combined")
        if zone_view_masks and zone_view_fraction == 0:
            raise ValueError("zone_view_masks needs zone views: set zone_view_fraction > 0")
        if not 0.0 <= full_report_fraction <= 1.0:
            raise ValueError(f"full_report_fraction must be in [0, 1], got {full_report_fraction}")
        if not 0.0 <= zone_view_fraction <= 1.0:
            raise ValueError(f"zone_view_fraction must be in [0, 1], got {zone_view_fraction}")
        if not 0.0 <= same_label_batches <= 1.0:
            raise ValueError(f"same_label_batches must be in [0, 1], got {same_label_batches}")
        self.augmentation = Augmentation.named(augment)  # checked now: a bad name stops the run before any data
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (contrastive losses need negatives), got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.save_hyperparameters()
        # checked now, so that a bad modality, mean or std stops the run before any data is read
        self.preprocessing = Preprocessing(
            image_size=image_size, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
            modality=modality, contrast=contrast,
        )  # fmt: skip
        self.manifest = Path(manifest).expanduser()
        self.images_seen = 0
        self.images_skipped = 0
        self.datasets: dict[str, ImageReportDataset] = {}
        self.dropped_reports: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        preprocessing = self.preprocessing
        for split in ("train", "val", "test"):
            records = read_manifest(self.manifest, split=split)
            kept = [r for r in records if report_sentences(r.report)]
            self.dropped_reports[split] = len(records) - len(kept)
            if split == "train" and self.hparams.limit_train:
                kept = kept[: self.hparams.limit_train]
            if split == "train" and self.hparams.get("label_repeats"):
                kept = repeat_by_label(kept, self.hparams.label_repeats)
            self.datasets[split] = ImageReportDataset(
                kept,
                preprocessing,
                self.hparams.full_report,
                self.hparams.seed,
                word_limit=self.hparams.get("caption_word_limit"),
                augmentation=self.augmentation if split == "train" else None,
                full_report_fraction=self.hparams.get("full_report_fraction", 0.0) if split == "train" else 0.0,
                zone_view_fraction=self.hparams.get("zone_view_fraction", 0.0) if split == "train" else 0.0,
                zone_view_masks=self.hparams.get("zone_view_masks", False) and split == "train",
                mirror_fraction=self.hparams.get("mirror_fraction", 0.0) if split == "train" else 0.0,
                mirror_pairs=bool(self.hparams.get("mirror_pairs", 0)) and split == "train",
                drop_negated=self.hparams.get("drop_negated", False) and split == "train",
                zone_view_decoys=self.hparams.get("zone_view_decoys", 0.0) if split == "train" else 0.0,
                zone_view_anchor=self.hparams.get("zone_view_anchor", "frame") if split == "train" else "frame",
                place_targets=self.hparams.get("place_targets", False) and split == "train",
                place_cells=self.hparams.get("place_cells", "box") if split == "train" else "box",
            )
        if self.dropped_reports["train"]:
            logger.warning("dropped %d training studies with no usable sentence", self.dropped_reports["train"])
        if len(self.datasets["train"]) < self.hparams.batch_size and stage in (None, "fit"):
            raise ValueError(
                f"{self.manifest} has {len(self.datasets['train'])} usable training pairs, fewer than one batch "
                f"({self.hparams.batch_size})"
            )
        self.tokenizer = load_tokenizer(self.hparams.text_model, max_length=self.hparams.max_length)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise ValueError(f"{self.manifest} has no usable '{split}' records")
        fraction = self.hparams.get("same_label_batches", 0.0) if train else 0.0
        groups = [(r.labels or ("",))[0] for r in dataset.records] if fraction else None
        pairs = self.hparams.get("mirror_pairs", 0) if train else 0
        sampler = EpochSampler(
            len(dataset), seed=self.hparams.seed, shuffle=train, groups=groups,
            batch_size=self.hparams.batch_size, same_group_fraction=fraction,
            pairable=dataset.pairable() if pairs else None, mirror_pairs=pairs,
        )  # fmt: skip
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=self.hparams.num_workers,
            collate_fn=Collate(self.tokenizer),
            drop_last=train,  # contrastive batches of equal size
            persistent_workers=False,  # workers see the sampler's new epoch
            pin_memory=torch.cuda.is_available(),
        )

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Count unreadable images (main process) and stop once there are too many."""
        self.images_seen += batch["size"]
        self.images_skipped += batch["skipped"]
        fraction = self.images_skipped / max(1, self.images_seen)
        if self.images_seen >= self.hparams.min_seen_for_bad_check and fraction > self.hparams.max_bad_fraction:
            raise ValueError(
                f"{self.images_skipped} of {self.images_seen} images could not be read ({fraction:.1%} > "
                f"max_bad_fraction {self.hparams.max_bad_fraction:.1%}); the skipped files are named in the log "
                f"warnings. Fix the files or the manifest {self.manifest}, or raise --data.max_bad_fraction."
            )
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
