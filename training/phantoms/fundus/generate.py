"""Write a PhantomFundus corpus in PhantomCXR's file formats (read unchanged by training and evaluation).

Layout of ``OUT``::

    images/<split>/<case_id>.png     8-bit RGB photographs
    manifest.csv                     image, report, split, labels, view (OD/OS), findings (training.manifest)
    annotations/<split>.json         COCO lesion boxes with label_text phrases (MS-CXR layout): the targets
    annotations/<split>_disc.json    COCO optic disc boxes (label_text "optic disc"): anatomy, for sanity checks
    generation.json                  the parameters, counts and the per-channel mean/std of the train images

Case ``i`` is generated from ``np.random.default_rng([seed, i])`` whatever the number of workers, so a corpus
is reproducible byte for byte; its split is drawn from the same stream (as PhantomCXR's).
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..generate import (
    MANIFEST_COLUMNS,
    CorpusSpec,
    collect_results,
    generate_samples,
    manifest_row,
    prepare_output,
    sample_record,
    to_uint8,
    write_coco,
)
from ..schema import SPLITS
from .render import render_fundus_case
from .reports import write_fundus_report
from .schema import LESION_KINDS, FundusCase, sample_fundus_case

FORMAT_VERSION = 1
CATEGORIES = [{"id": k + 1, "name": name, "supercategory": "lesion"} for k, name in enumerate(LESION_KINDS)]
DISC_CATEGORIES = [{"id": 1, "name": "optic_disc", "supercategory": "anatomy"}]
DISC_PHRASE = "optic disc"


def generate_fundus_case(index: int, spec: CorpusSpec) -> tuple[FundusCase, np.ndarray, str]:
    """Case ``index`` of the corpus: ``(case, image float32 [size, size, 3] RGB in [0, 1], report)``."""
    return generate_samples(index, spec, "fundus", sample_fundus_case, render_fundus_case, write_fundus_report)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB float [0, 1] image as an 8-bit RGB PNG."""
    if not cv2.imwrite(str(path), cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2BGR)):
        raise ValueError(f"could not write {path}")


def _work(job: tuple[int, CorpusSpec, str]) -> dict:
    index, spec, out = job
    case, image, report = generate_fundus_case(index, spec)
    relative = f"images/{case.split}/{case.case_id}.png"
    write_png(Path(out) / relative, image)
    findings = [
        {
            "kind": f.kind,
            "region": f.region,
            "count": f.count,
            "pattern": f.pattern,
            "phrase": f.phrase,
            "boxes": f.boxes,
        }
        for f in case.findings
    ]
    pixels = to_uint8(image).reshape(-1, 3).astype(np.float64) / 255.0
    return {
        **sample_record(index, case, relative, report, findings),
        "disc": [{"kind": "optic_disc", "phrase": DISC_PHRASE, "boxes": [case.disc_box]}],
        "channel_sums": [pixels.sum(axis=0).tolist(), (pixels**2).sum(axis=0).tolist(), len(pixels)],
    }


def generate_fundus_corpus(out: str | Path, spec: CorpusSpec, workers: int = 1) -> dict:
    """Write the corpus (see the module docstring) and return counts per split."""
    out = prepare_output(out)
    counts = dict.fromkeys(SPLITS, 0)
    sums, squares, pixels = np.zeros(3), np.zeros(3), 0
    jobs = [(i, spec, str(out)) for i in range(spec.n)]
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        spools = {split: Path(tmp) / f"{split}.jsonl" for split in SPLITS}
        discs = {split: Path(tmp) / f"{split}_disc.jsonl" for split in SPLITS}
        handles = {path: path.open("w", encoding="utf-8") for path in (*spools.values(), *discs.values())}
        with (out / "manifest.csv").open("w", encoding="utf-8", newline="") as manifest:
            writer = csv.DictWriter(manifest, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            for record in tqdm(collect_results(jobs, workers, _work), total=spec.n, desc="PhantomFundus", unit="img"):
                split = record["split"]
                counts[split] += 1
                if split == "train":
                    channel_sum, channel_squares, count = record["channel_sums"]
                    sums, squares, pixels = sums + channel_sum, squares + channel_squares, pixels + count
                writer.writerow(manifest_row(record))
                handles[spools[split]].write(json.dumps(record) + "\n")
                handles[discs[split]].write(json.dumps({**record, "findings": record["disc"]}) + "\n")
        for handle in handles.values():
            handle.close()
        for split in SPLITS:
            description = "PhantomFundus synthetic fundus photographs: lesions (MS-CXR layout)"
            write_coco(out / "annotations" / f"{split}.json", spools[split], spec.size, CATEGORIES, description)
            description = "PhantomFundus synthetic fundus photographs: optic disc (anatomy)"
            write_coco(
                out / "annotations" / f"{split}_disc.json", discs[split], spec.size, DISC_CATEGORIES, description
            )
    provenance = {
        "format_version": FORMAT_VERSION,
        "modality": "fundus",
        "n": spec.n,
        "size": spec.size,
        "seed": spec.seed,
        "split_fractions": list(spec.split_fractions),
        "counts": counts,
        "note": "synthetic images generated by training.phantoms.fundus; no real patient data",
    }
    if pixels:
        mean = sums / pixels
        std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
        provenance["train_channel_mean"] = [round(float(v), 4) for v in mean]
        provenance["train_channel_std"] = [round(float(v), 4) for v in std]
    (out / "generation.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return counts
