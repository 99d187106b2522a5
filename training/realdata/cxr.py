"""The corpus of real chest films (issue #32): films, report text written from their masks and boxes, splits, targets.

    python -m training prepare-cxr --shared ../shared/data/cxr --out data/realcxr

Sources (``--shared``, the layout of ``../shared/data/cxr``):

* ``covidqu_train``: COVID-QU-Ex films with COVID-19 infection masks and lung masks for every film (3 classes);
* ``tbx11k_train``: TBX11K tuberculosis films with YOLO boxes (active / obsolete);
* ``covid_notes``: films with their real clinical notes, used as report text unchanged (train split only);
* ``iu_reports``: real IU/Open-i reports, mined for the normal and negative sentences radiologists write.

The report text is written by :mod:`training.realdata.cxr_reports` from each film's class and mask or boxes.

**These reports are derived from the annotations and stand in for real reports**; the masks and boxes are used
only to write this text, never as a training signal on pixels. The annotations of every split are also written as
localization targets (``annotations/<split>.json``: one class-level prompt per finding, the infection mask or the
TB boxes; ``annotations/<split>_phrases.json``: the phrases as they occur in the reports).

Splits are drawn per film from a hash of its file name (stable when files are added): COVID-QU-Ex has no patient
ids, so films of one patient may fall in different splits; TBX11K's films are one per patient.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from .common import Target, run_command, stable_fraction, write_coco, write_manifest
from .cxr_reports import (
    CLASS_PHRASES,
    TB_CLASSES,
    covid_report,
    describe_infection,
    mine_iu_sentences,
    normal_report,
    other_disease_report,
    strip_location_words,
    tb_report,
)

# Films of covid_notes bundled as demo examples (assets/examples): never trained on.
DEMO_EXAMPLES = ("12941_2020_358_Fig1_HTML.jpg", "thnov10p5641g006-c.jpg", "41182_2020_203_Fig4_HTML.jpg")


def _read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"{path}: not a readable mask image")
    return mask > 127


def _split(name: str, salt: str, fractions: tuple[float, float]) -> str:
    u = stable_fraction(name, salt)
    return "test" if u < fractions[1] else "val" if u < fractions[0] + fractions[1] else "train"


def build_corpus(
    shared: Path, out: Path, seed: int = 0, limit: int | None = None, class_only: bool = False
) -> dict[str, dict[str, int]]:
    """Write the corpus from ``shared`` (``../shared/data/cxr``); returns the film counts per source and split.

    ``class_only``: the ablation's corpus, the same films and splits with text that names the finding only (no
    side, zone or extent words; the real notes with those words removed). Its targets are the same masks and boxes.
    """
    import pandas as pd

    vocabulary = mine_iu_sentences(shared / "iu_reports" / "NLMCXR_reports.tgz")
    rows, images, class_level, phrase_level = [], {}, {}, {}
    counts: dict[str, Counter] = {}

    def add(source: str, split: str, src: Path, relative: str, size: tuple[int, int], report: str, labels: str,
            class_targets: list[Target], targets: list[Target]) -> None:  # fmt: skip
        index = len(rows)
        destination = out / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, destination)
        rows.append(
            {
                "image": relative,
                "report": report,
                "split": split,
                "labels": labels,
                "view": "frontal",
                "findings": len(targets),
                "source": f"{source}: {src.relative_to(shared).as_posix()}",
            }
        )
        images.setdefault(split, []).append({"id": index, "file_name": relative, "height": size[0], "width": size[1]})
        class_level.setdefault(split, []).extend((index, t) for t in class_targets)
        phrase_level.setdefault(split, []).extend((index, t) for t in targets)
        counts.setdefault(source, Counter())[split] += 1

    covidqu = pd.read_csv(shared / "covidqu_train" / "manifest.csv", keep_default_na=False)
    for number, row in enumerate(covidqu.to_dict("records")):
        if limit is not None and number >= limit:
            break
        root = shared / "covidqu_train"
        split = _split(row["image"], "covidqu", (0.1, 0.1))
        rng = np.random.default_rng([seed, 0, number])
        lung = _read_mask(root / row["lung_mask"])
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(row["image"]).stem).strip("_")
        relative = f"images/{split}/covidqu_{stem}.png"
        if row["class"] == "covid":
            infection = _read_mask(root / row["infection_mask"])
            findings = describe_infection(infection, lung)
            if not findings:  # below the share that a reader names: describe the whole mask in its main lung
                findings = describe_infection(infection, lung, min_share=0.0)
            report, targets = covid_report(findings, rng, vocabulary, split == "test", class_only)
            whole = Target("covid_opacity", CLASS_PHRASES["covid_opacity"], mask=infection)
            add(
                "covidqu",
                split,
                root / row["image"],
                relative,
                infection.shape,
                report,
                "covid_opacity",
                [whole],
                targets,
            )
        elif row["class"] == "normal":
            add("covidqu", split, root / row["image"], relative, lung.shape, normal_report(rng, vocabulary), "", [], [])
        else:
            add(
                "covidqu",
                split,
                root / row["image"],
                relative,
                lung.shape,
                other_disease_report(rng, vocabulary),
                "other_disease",
                [],
                [],
            )

    tbx = pd.read_csv(shared / "tbx11k_train" / "manifest.csv", keep_default_na=False)
    for number, row in enumerate(tbx.itertuples(index=False)):
        if limit is not None and number >= limit:
            break
        root = shared / "tbx11k_train"
        split = _split(row.image, "tbx11k", (0.15, 0.15))
        rng = np.random.default_rng([seed, 1, number])
        size = 512, 512  # the films of tbx11k_train (README); the YOLO boxes are normalised by 512
        boxes = []
        for line in (root / row.labels).read_text(encoding="utf-8").splitlines():
            fields = line.split()
            if fields:
                k, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:5])
                boxes.append((TB_CLASSES[k], [(cx - w / 2) * 512, (cy - h / 2) * 512, w * 512, h * 512]))
        report, targets = tb_report(boxes, 512, 512, rng, vocabulary, split == "test", class_only)
        whole = [
            Target(k, CLASS_PHRASES[k], boxes=[b for kk, b in boxes if kk == k]) for k in sorted({k for k, _ in boxes})
        ]
        relative = f"images/{split}/tbx11k_{Path(row.image).name}"
        add(
            "tbx11k",
            split,
            root / row.image,
            relative,
            size,
            report,
            ";".join(sorted({k for k, _ in boxes})),
            whole,
            targets,
        )

    notes = pd.read_csv(shared / "covid_notes" / "manifest.csv", keep_default_na=False)
    for row in notes.itertuples(index=False):
        if row.image in DEMO_EXAMPLES or not row.clinical_notes.strip():
            continue
        path = shared / "covid_notes" / row.image
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            continue
        add(
            "covid_notes",
            "train",
            path,
            f"images/train/notes_{Path(row.image).stem}.jpg",
            image.shape,
            strip_location_words(row.clinical_notes) if class_only else row.clinical_notes.strip(),
            row.finding,
            [],
            [],
        )

    annotations = out / "annotations"
    for split in ("train", "val", "test"):
        write_coco(
            annotations / f"{split}.json",
            images.get(split, []),
            class_level.get(split, []),
            "Real chest films, class-level prompts (training.realdata.cxr)",
        )
        write_coco(
            annotations / f"{split}_phrases.json",
            images.get(split, []),
            phrase_level.get(split, []),
            "Real chest films, prompts as phrased in the generated reports (training.realdata.cxr)",
        )
    write_manifest(out / "manifest.csv", rows)
    summary = {source: dict(c) for source, c in counts.items()}
    (out / "generation.json").write_text(json.dumps(
        {"sources": str(shared), "seed": seed, "counts": summary, "class_phrases": CLASS_PHRASES,
         "class_only": class_only,
         "mined_sentences": {"normal_lungs": len(vocabulary.normal_lungs), "context": len(vocabulary.context)},
         "reports": "derived from the masks and boxes (notes: real); they stand in for real reports"}, indent=2),
        encoding="utf-8")  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training prepare-cxr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, required=True, help="the cxr folder of the shared data")
    parser.add_argument("--out", type=Path, required=True, help="corpus folder to write")
    parser.add_argument("--seed", type=int, default=0, help="phrasing seed")
    parser.add_argument("--limit", type=int, default=None, help="at most this many films of each source (tests)")
    parser.add_argument("--class-only", action="store_true", help="the ablation: text without side/zone/extent words")
    args = parser.parse_args(argv)
    return run_command(lambda: build_corpus(args.shared, args.out, args.seed, args.limit, args.class_only), args.out)


if __name__ == "__main__":
    sys.exit(main())
