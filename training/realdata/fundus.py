"""Grader-style reports for real IDRiD fundus photographs, written from their lesion boxes, and their corpus.

    python -m training prepare-fundus --train ../shared/data/fundus/idrid_train --test ../shared/data/fundus/idrid \\
        --out data/idrid_corpus

The photographs came without reports. :func:`describe_photo` reads a photo's YOLO boxes (optic disc, hard
exudates, haemorrhage) and places each lesion box as a grader would, relative to the disc and the macula:

* the **eye** from the disc's side of the photograph (standard fundus photographs are seen from the front: the
  disc of a right eye lies on the image's right, nasal to the macula);
* the **fovea**, estimated 2.5 disc diameters temporal to the disc centre and 0.3 below it (the disc diameter is
  the disc box's mean side);
* each lesion box's **region** from its centre: within one disc diameter of the fovea (macula), around the disc
  (peripapillary), nasal to the disc (superonasal / inferonasal / nasal), between the disc and the macula
  (papillomacular), temporal to the macula, or along the superior / inferior temporal arcade;
* the **amount** in words from the number of boxes ("a few", "scattered", "numerous"): graders do not count
  clusters, and IDRiD's boxes often group a cluster of small lesions.

:func:`write_report` turns that into ``EYE:`` / ``FINDINGS:`` / ``IMPRESSION:`` text, with the absent classes
negated ("No hard exudates."), several phrasings per finding and, in the test split, held-out nouns and region
words (PhantomFundus's held-out vocabulary, :mod:`training.phantoms.fundus.reports`). **These reports are derived
from the annotations and stand in for real reports**; the boxes are never a training signal on pixels.

Splits: ``--train`` (IDRiD ``idrid_train``) is split by photo into train and val (``--val-fraction``, stable per
file name); ``--test`` (IDRiD ``idrid``) is the test split, used by no choice.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from afloc.imaging.boxes import Box, parse_yolo_line

from ..phantoms.fundus.reports import TEST_ONLY_NOUNS as PHANTOM_TEST_NOUNS
from ..phantoms.fundus.reports import TRAIN_NOUNS as PHANTOM_TRAIN_NOUNS
from .common import Target, pick, run_command, save_resized, stable_fraction, write_coco, write_manifest

CLASSES = ("optic_disc", "hard_exudates", "haemorrhage")
LESIONS = ("hard_exudates", "haemorrhage")
CLASS_PHRASES = {"optic_disc": "optic disc", "hard_exudates": "hard exudates", "haemorrhage": "haemorrhage"}
REGIONS = (
    "macula", "peripapillary", "nasal_to_disc", "superonasal", "inferonasal", "papillomacular",
    "temporal_to_macula", "superotemporal_arcade", "inferotemporal_arcade",
)  # fmt: skip

# Region words: PhantomFundus's (so a model started from it knows them), plus the forms graders use for IDRiD.
TRAIN_PLACES: dict[str, tuple[str, ...]] = {
    "macula": ("at the macula", "in the macula", "within one disc diameter of the fovea", "at the posterior pole"),
    "peripapillary": ("around the disc", "at the disc margin", "adjacent to the optic disc"),
    "nasal_to_disc": ("nasal to the disc", "nasal to the optic disc"),
    "superonasal": ("in the superonasal quadrant", "superonasally"),
    "inferonasal": ("in the inferonasal quadrant", "inferonasally"),
    "papillomacular": ("between the disc and the macula", "in the papillomacular region"),
    "temporal_to_macula": ("temporal to the macula",),
    "superotemporal_arcade": ("along the superotemporal arcade", "near the superior arcade"),
    "inferotemporal_arcade": ("along the inferotemporal arcade", "near the inferior arcade"),
}
TEST_ONLY_PLACES: dict[str, tuple[str, ...]] = {
    "macula": ("at the fovea", "in the foveal region"),
    "peripapillary": ("around the optic nerve head",),
    "nasal_to_disc": ("nasal to the optic nerve head",),
    "superonasal": ("in the upper nasal quadrant",),
    "inferonasal": ("in the lower nasal quadrant",),
    "papillomacular": ("between the optic nerve head and the fovea",),
    "temporal_to_macula": ("temporal to the fovea",),
    "superotemporal_arcade": ("along the superior temporal vascular arcade",),
    "inferotemporal_arcade": ("along the inferior temporal vascular arcade",),
}
TRAIN_NOUNS: dict[str, tuple[str, ...]] = {
    "hard_exudates": PHANTOM_TRAIN_NOUNS["hard_exudates"],
    "haemorrhage": ("haemorrhages", "retinal haemorrhages", "intraretinal haemorrhages", "dot and blot haemorrhages"),
}
TEST_ONLY_NOUNS: dict[str, tuple[str, ...]] = {
    "hard_exudates": PHANTOM_TEST_NOUNS["hard_exudates"],
    "haemorrhage": ("hemorrhages", "retinal bleeds"),
}
AMOUNTS = {1: ("a few", "some"), 2: ("scattered", "several"), 4: ("numerous", "multiple", "extensive")}
NEGATIONS = {
    "hard_exudates": ("No hard exudates.", "No exudates are seen.", "There are no hard exudates."),
    "haemorrhage": ("No haemorrhages.", "No retinal haemorrhages are seen.", "There are no haemorrhages."),
}
DISC_SENTENCES = (
    "The optic disc is pink and well defined.",
    "Healthy optic disc with sharp margins.",
    "The disc margins are sharp.",
    "The optic disc appears normal.",
)
EYE_LINES = {"right": ("Right eye (OD).", "OD.", "Right eye."), "left": ("Left eye (OS).", "OS.", "Left eye.")}
assert set(TRAIN_PLACES) == set(REGIONS) == set(TEST_ONLY_PLACES)

# Finer places (``places="fine"``): the ETDRS grid graders use for macular findings, centred on the fovea: the
# central subfield (within half a disc diameter), and superior / inferior / nasal / temporal sectors of an inner
# ring (to 1.5 disc diameters) and an outer ring (to 3); the regions above beyond it. The radii are in disc
# diameters, about 1.5 times the clinical grid's (1, 3 and 6 mm across, with a disc about 1.5 mm wide), so that a
# subfield holds a few cells of a 16 x 16 map.
DIRECTIONS = ("superior", "inferior", "nasal", "temporal")
FINE_REGIONS = ("centre", *(f"{ring}_{d}" for ring in ("inner", "outer") for d in DIRECTIONS))
FINE_TRAIN_PLACES: dict[str, tuple[str, ...]] = {
    "centre": ("involving the centre of the macula", "in the central subfield", "centred on the fovea"),
    **{f"inner_{d}": (f"in the inner {d} subfield", f"just {d} of the fovea") for d in DIRECTIONS},
    **{f"outer_{d}": (f"in the outer {d} subfield", f"in the {d} macula") for d in DIRECTIONS},
}
FINE_TEST_ONLY_PLACES: dict[str, tuple[str, ...]] = {
    "centre": ("at the centre of the fovea",),
    **{f"inner_{d}": (f"in the {d} parafovea",) for d in DIRECTIONS},
    **{f"outer_{d}": (f"in the {d} perifovea",) for d in DIRECTIONS},
}
PLACES = ("coarse", "fine")
assert set(FINE_TRAIN_PLACES) == set(FINE_REGIONS) == set(FINE_TEST_ONLY_PLACES)


FOVEA_OFFSET = (2.5, 0.3)  # the fovea: this many disc diameters temporal to the disc centre, and below it


def fovea_from_disc(disc: tuple[float, float], disc_diameter: float, eye: str) -> tuple[float, float]:
    """The fovea's estimated centre, in the units of ``disc`` and ``disc_diameter``, for a ``"right"`` or ``"left"``
    eye (the disc, and so the nose, on the image's right for a right eye; the fovea lies temporal to it)."""
    nasal = 1.0 if eye == "right" else -1.0
    return (disc[0] - nasal * FOVEA_OFFSET[0] * disc_diameter, disc[1] + FOVEA_OFFSET[1] * disc_diameter)


@dataclass
class Photo:
    """What a grader sees on one photograph: the eye, the landmarks and each lesion class's boxes by region."""

    eye: str | None
    disc: tuple[float, float] | None
    fovea: tuple[float, float] | None
    disc_diameter: float
    lesions: dict[str, dict[str, list[Box]]]  # class -> region -> boxes


def read_yolo_boxes(label_file: Path, width: int, height: int) -> list[Box]:
    """The boxes of a YOLO file (``class cx cy w h`` normalised) in pixels of a ``width x height`` image; each
    box's label is its class name."""
    boxes = []
    for number, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{label_file}, line {number}"
        parsed = parse_yolo_line(line, width, height, where)
        if parsed is None:
            continue
        token, box = parsed
        if not (token.isdigit() and int(token) < len(CLASSES)):
            raise ValueError(f"{where}: expected 'class cx cy w h' with class 0-{len(CLASSES) - 1}, got {line!r}")
        boxes.append(box._replace(label=CLASSES[int(token)]))
    return boxes


def region_of(point: tuple[float, float], photo: Photo) -> str:
    """The region a grader names for a lesion centred at ``point`` (pixels), given the photo's landmarks."""
    if photo.disc is None or photo.fovea is None or photo.eye is None:
        raise ValueError("regions need the optic disc (and so the eye and the fovea)")
    dd = photo.disc_diameter
    nasal = 1.0 if photo.eye == "right" else -1.0  # image direction of the nose
    (x, y), (dx, dy), (fx, fy) = point, photo.disc, photo.fovea
    if np.hypot(x - fx, y - fy) <= dd:
        return "macula"
    if np.hypot(x - dx, y - dy) <= 1.0 * dd:
        return "peripapillary"
    if (x - dx) * nasal > 0.5 * dd:  # beyond the disc on the nasal side
        up = (y - dy) / dd
        return "superonasal" if up < -0.75 else "inferonasal" if up > 0.75 else "nasal_to_disc"
    temporal_of_fovea = (fx - x) * nasal / dd  # > 0: temporal to the fovea
    below = (y - fy) / dd
    if temporal_of_fovea > 0.5 and abs(below) < 1.5:
        return "temporal_to_macula"
    if abs(below) < 0.75 and temporal_of_fovea <= 0.5:
        return "papillomacular"
    return "superotemporal_arcade" if below < 0 else "inferotemporal_arcade"


def fine_region(point: tuple[float, float], photo: Photo) -> str:
    """The ETDRS-like place (:data:`FINE_REGIONS`) of a lesion centred at ``point`` (pixels): ``centre`` within half
    a disc diameter of the fovea; around the disc (``peripapillary``) within one disc diameter of it; the sector of
    the inner (to 1.5 disc diameters) or outer ring (to 3) that the direction from the fovea falls in (nasal: toward
    the disc); :func:`region_of` beyond."""
    if photo.disc is None or photo.fovea is None or photo.eye is None:
        raise ValueError("regions need the optic disc (and so the eye and the fovea)")
    dd, nasal = photo.disc_diameter, (1.0 if photo.eye == "right" else -1.0)
    (x, y), (dx, dy), (fx, fy) = point, photo.disc, photo.fovea
    across, down = (x - fx) * nasal / dd, (y - fy) / dd  # toward the nose, and down, in disc diameters
    radius = float(np.hypot(across, down))
    if radius <= 0.5:
        return "centre"
    if np.hypot(x - dx, y - dy) <= dd:
        return "peripapillary"
    if radius <= 3.0:
        ring = "inner" if radius <= 1.5 else "outer"
        if abs(down) >= abs(across):
            return f"{ring}_{'superior' if down < 0 else 'inferior'}"
        return f"{ring}_{'nasal' if across > 0 else 'temporal'}"
    return region_of(point, photo)


def describe_photo(boxes: list[Box], width: int, height: int, places: str = "coarse") -> Photo:
    """Landmarks (eye, disc, fovea) and each lesion box's region (``places``: ``"coarse"``, :func:`region_of`;
    ``"fine"``, :func:`fine_region`), from a photo's boxes."""
    if places not in PLACES:
        raise ValueError(f"places must be one of {PLACES}, got {places!r}")
    discs = [b for b in boxes if b.label == "optic_disc"]
    if not discs:
        return Photo(None, None, None, 0.0, {k: {} for k in LESIONS})
    disc_box = max(discs, key=lambda b: b.w * b.h)
    disc = disc_box.centre
    dd = (disc_box.w + disc_box.h) / 2
    eye = "right" if disc[0] > width / 2 else "left"
    fovea = fovea_from_disc(disc, dd, eye)
    photo = Photo(eye, disc, fovea, dd, {k: {} for k in LESIONS})
    place_of = fine_region if places == "fine" else region_of
    for box in boxes:
        if box.label in LESIONS:
            photo.lesions[box.label].setdefault(place_of(box.centre, photo), []).append(box)
    return photo


def _amount(count: int, rng: np.random.Generator) -> str:
    key = 4 if count >= 4 else 2 if count >= 2 else 1
    return pick(rng, AMOUNTS[key])


def lesion_phrase(kind: str, region: str, count: int, rng: np.random.Generator, held_out: bool) -> str:
    """A noun phrase for ``count`` boxes of ``kind`` in ``region``; ``held_out``: a test-only noun, place or both."""
    mode = pick(rng, ("noun", "place", "both")) if held_out else "none"
    noun = pick(rng, (TEST_ONLY_NOUNS if mode in ("noun", "both") else TRAIN_NOUNS)[kind])
    held = mode in ("place", "both")
    if region in FINE_REGIONS:
        place = pick(rng, (FINE_TEST_ONLY_PLACES if held else FINE_TRAIN_PLACES)[region])
    else:
        place = pick(rng, (TEST_ONLY_PLACES if held else TRAIN_PLACES)[region])
    words = [noun, place]
    if rng.random() < 0.7:
        words.insert(0, _amount(count, rng))
    return " ".join(words)


def write_report(photo: Photo, rng: np.random.Generator, held_out: bool = False) -> tuple[str, list[Target]]:
    """The report of one photo and its phrase targets (one per lesion class and region, as phrased in the text)."""
    lines = []
    if photo.eye is not None:
        lines.append("EYE: " + pick(rng, EYE_LINES[photo.eye]))
    findings, targets = [pick(rng, DISC_SENTENCES)], []
    present = []
    for kind in LESIONS:
        groups = photo.lesions[kind]
        if not groups:
            if rng.random() < 0.85:
                findings.append(pick(rng, NEGATIONS[kind]))
            continue
        present.append(kind)
        for region, boxes in sorted(groups.items()):
            phrase = lesion_phrase(kind, region, len(boxes), rng, held_out)
            sentence = pick(rng, ("{P}.", "{P} are seen.", "There are {p}.", "{P} are present."))
            findings.append(sentence.format(P=phrase[0].upper() + phrase[1:], p=phrase))
            targets.append(Target(kind, phrase, [[b.x, b.y, b.w, b.h] for b in boxes]))
    lines.append("FINDINGS: " + " ".join(findings))
    if present:
        names = " and ".join({"hard_exudates": "exudates", "haemorrhage": "haemorrhages"}[k] for k in present)
        impression = pick(rng, (f"Diabetic retinopathy with {names}.", f"Features of diabetic retinopathy ({names})."))
    else:
        impression = pick(rng, ("No diabetic retinopathy.", "Normal fundus.", "No retinopathy."))
    lines.append("IMPRESSION: " + impression)
    return "\n".join(lines), targets


def class_targets(boxes: list[Box]) -> list[Target]:
    """One target per class present (every box of the class): the class-level prompts of the evaluation."""
    out = []
    for kind in CLASSES:
        mine = [[b.x, b.y, b.w, b.h] for b in boxes if b.label == kind]
        if mine:
            out.append(Target(kind, CLASS_PHRASES[kind], mine))
    return out


def held_out_terms() -> tuple[str, ...]:
    """Every test-only noun and region form; none occurs in a train or val report."""
    terms = {n for nouns in TEST_ONLY_NOUNS.values() for n in nouns}
    terms.update(p for places in TEST_ONLY_PLACES.values() for p in places)
    terms.update(p for places in FINE_TEST_ONLY_PLACES.values() for p in places)
    return tuple(sorted(terms))


def _photos(folder: Path) -> list[Path]:
    photos = sorted(p for p in folder.glob("*.jpg") if p.with_suffix(".txt").is_file())
    if not photos:
        raise ValueError(f"{folder}: no photographs with a YOLO .txt beside them")
    return photos


def build_corpus(
    train: Path, test: Path, out: Path, longest: int = 640, val_fraction: float = 0.15, seed: int = 0,
    places: str = "coarse",
):  # fmt: skip
    """Write the corpus (images, manifest, class-level and phrase-level COCO per split); returns split counts.
    ``places``: how finely the reports place each lesion (:func:`describe_photo`)."""
    if places not in PLACES:
        raise ValueError(f"places must be one of {PLACES}, got {places!r}")
    jobs = [(p, "val" if stable_fraction(p.name, "idrid-val") < val_fraction else "train") for p in _photos(train)]
    jobs += [(p, "test") for p in _photos(test)]
    overlap = {p.name for p, s in jobs if s != "test"} & {p.name for p, s in jobs if s == "test"}
    if overlap:
        raise ValueError(f"photos in both the training pool and the test set: {sorted(overlap)[:5]}")
    rows, images, class_level, phrase_level = [], {}, {}, {}
    for index, (path, split) in enumerate(jobs):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: not a readable image")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        relative = f"images/{split}/{path.stem}.png"
        scale, (height, width) = save_resized(image, out / relative, longest)
        boxes = read_yolo_boxes(path.with_suffix(".txt"), width, height)
        photo = describe_photo(boxes, width, height, places)
        rng = np.random.default_rng([seed, index])
        report, targets = write_report(photo, rng, held_out=split == "test")
        present = sorted({b.label for b in boxes} - {"optic_disc"})
        rows.append(
            {"image": relative, "report": report, "split": split, "labels": ";".join(present),
             "view": {"right": "OD", "left": "OS", None: ""}[photo.eye], "findings": len(targets),
             "source": f"IDRiD via codras {path.parent.name}/{path.name}"}
        )  # fmt: skip
        images.setdefault(split, []).append({"id": index, "file_name": relative, "width": width, "height": height})
        class_level.setdefault(split, []).extend((index, t) for t in class_targets(boxes))
        phrase_level.setdefault(split, []).extend((index, t) for t in targets)
    annotations = out / "annotations"
    for split in ("train", "val", "test"):
        description = "IDRiD photographs, class-level prompts (training.realdata.fundus)"
        write_coco(annotations / f"{split}.json", images.get(split, []), class_level.get(split, []), description)
        description = "IDRiD photographs, prompts as phrased in the generated reports (training.realdata.fundus)"
        write_coco(
            annotations / f"{split}_phrases.json", images.get(split, []), phrase_level.get(split, []), description
        )
    write_manifest(out / "manifest.csv", rows)
    counts = {split: sum(1 for r in rows if r["split"] == split) for split in ("train", "val", "test")}
    (out / "generation.json").write_text(
        json.dumps({"source": "IDRiD (codras boxes)", "train": str(train), "test": str(test), "longest": longest,
                    "val_fraction": val_fraction, "seed": seed, "places": places, "counts": counts,
                    "reports": "derived from the box annotations; they stand in for real reports"}, indent=2),
        encoding="utf-8",
    )  # fmt: skip
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training prepare-fundus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="IDRiD photos with YOLO boxes for train and val")
    parser.add_argument("--test", type=Path, required=True, help="IDRiD photos with YOLO boxes for the test split")
    parser.add_argument("--out", type=Path, required=True, help="corpus folder to write")
    parser.add_argument("--longest", type=int, default=640, help="longest side of the stored images, in pixels")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="share of --train photos held for val")
    parser.add_argument("--seed", type=int, default=0, help="phrasing seed")
    parser.add_argument(
        "--places", choices=PLACES, default="coarse",
        help="coarse: named regions around the disc and the macula; fine: the ETDRS grid's subfields around the "
        "fovea (centre, inner and outer superior / inferior / nasal / temporal), the named regions beyond",
    )  # fmt: skip
    args = parser.parse_args(argv)
    return run_command(lambda: build_corpus(args.train, args.test, args.out, args.longest, args.val_fraction,
                                            args.seed, args.places), args.out)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
