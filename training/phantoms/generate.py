"""Write a PhantomCXR corpus: images, manifest, MS-CXR-style COCO JSON per split, a few DICOMs.

Layout of ``OUT``::

    images/<split>/<case_id>.png     8-bit greyscale films
    manifest.csv                     image, report, split, labels, view, findings (read by training.manifest)
    annotations/<split>.json         COCO boxes with label_text phrases (MS-CXR layout)
    dicom/                           a few test-split films as DICOM (MONOCHROME2 and MONOCHROME1)
    generation.json                  the parameters, for provenance

Case ``i`` is generated from ``np.random.default_rng([seed, i])`` whatever the number of workers, so a corpus
is reproducible byte for byte (DICOM UIDs are derived from the seed and the case index too); its split is drawn
from the same stream. Workers return only small metadata and
annotations are spooled to disk, so memory does not grow with N.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .render import render_case
from .reports import write_report
from .schema import FINDING_KINDS, SPLITS, Case, sample_case

FORMAT_VERSION = 1
CATEGORIES = [{"id": k + 1, "name": name, "supercategory": "finding"} for k, name in enumerate(FINDING_KINDS)]
CATEGORY_IDS = {c["name"]: c["id"] for c in CATEGORIES}
MANIFEST_COLUMNS = ["image", "report", "split", "labels", "view", "findings"]


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate.

    Attributes:
        n: number of studies.
        size: image side in pixels.
        seed: corpus seed.
        split_fractions: fractions of train / val / test.
    """

    n: int
    size: int = 256
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.size < 128:
            raise ValueError(f"size must be >= 128, got {self.size}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or sum(self.split_fractions) <= 0:
            raise ValueError(f"split_fractions must be three non-negative numbers, got {self.split_fractions}")


def split_of(rng: np.random.Generator, fractions: tuple[float, float, float]) -> str:
    cumulative = np.cumsum(fractions) / np.sum(fractions)
    return SPLITS[int(np.searchsorted(cumulative, rng.random(), side="right"))]


def generate_samples(index: int, spec: CorpusSpec, prefix: str, sample, render, write) -> tuple:
    """Case ``index`` of a corpus: ``(case, image, report)`` from ``np.random.default_rng([seed, index])``.

    The split, ``sample(rng, case_id, split)``, ``render(case, size, rng)`` and ``write(case, rng)`` draw on that
    one stream in this order; the case id is ``{prefix}_{seed}_{index:06d}``. Shared with PhantomFundus.
    """
    rng = np.random.default_rng([spec.seed, index])
    split = split_of(rng, spec.split_fractions)
    case = sample(rng, f"{prefix}_{spec.seed}_{index:06d}", split)
    image = render(case, spec.size, rng)
    report = write(case, rng)
    return case, image, report


def generate_case(index: int, spec: CorpusSpec) -> tuple[Case, np.ndarray, str]:
    """Case ``index`` of the corpus: ``(case, image float32 [size, size] in [0, 1], report)``."""
    return generate_samples(index, spec, "phantom", sample_case, render_case, write_report)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def sample_record(index: int, case, relative: str, report: str, findings: list[dict]) -> dict:
    """A worker's result for a case (a manifest row and its annotations); ``relative`` is the image path."""
    return {
        "index": index,
        "case_id": case.case_id,
        "image": relative,
        "report": report,
        "split": case.split,
        "labels": ";".join(case.labels),
        "view": case.view,
        "findings": findings,
    }


def _work(job: tuple[int, CorpusSpec, str]) -> dict:
    index, spec, out = job
    case, image, report = generate_case(index, spec)
    relative = f"images/{case.split}/{case.case_id}.png"
    cv2.imwrite(str(Path(out) / relative), to_uint8(image))
    findings = [
        {"kind": f.kind, "side": f.side, "zone": f.zone, "severity": f.severity, "phrase": f.phrase, "boxes": f.boxes}
        for f in case.findings
    ]
    return sample_record(index, case, relative, report, findings)


def collect_results(jobs: list, workers: int, work=_work) -> Iterator[dict]:
    """``work(job)`` for every job, in order (``work`` must be a module-level function: it is pickled)."""
    if workers <= 1:
        yield from map(work, jobs)
        return
    context = multiprocessing.get_context("spawn")  # no fork-inherited threads or RNG state
    with context.Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        yield from pool.imap(work, jobs, chunksize=32)


def write_dicom(path: Path, image: np.ndarray, monochrome1: bool = False, *, seed: int, index: int) -> None:
    """Write a float [0, 1] film as a 16-bit (12 bits stored) CR DICOM with a window, no patient data.

    The study, series and instance UIDs are derived from the corpus ``seed`` and the case ``index`` (hashed by
    pydicom under its UID root), so the same corpus is written byte for byte, DICOMs included.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def uid(role: str) -> str:
        return generate_uid(entropy_srcs=["PhantomCXR", str(seed), str(index), role])

    values = np.clip(np.rint(image * 4095.0), 0, 4095).astype(np.uint16)
    if monochrome1:
        values = 4095 - values
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.Modality = "CR"
    ds.PatientName = "PhantomCXR^Synthetic"
    ds.PatientID = path.stem
    ds.BodyPartExamined = "CHEST"
    ds.ImageComments = "PhantomCXR synthetic image: not a real patient"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = values.tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def write_coco(
    path: Path,
    spool: Path,
    size: int,
    categories: list[dict] = CATEGORIES,
    description: str = "PhantomCXR synthetic chest X-rays (MS-CXR layout)",
) -> None:
    """Assemble a COCO JSON from the spooled JSONL records of one split, streaming (no list of all cases)."""
    category_ids = {c["name"]: c["id"] for c in categories}
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"info": {"description": description}})[:-1] + ",\n")
        out.write(f'"categories": {json.dumps(categories)},\n"images": [\n')
        first = True
        if spool.is_file():
            for line in spool.open(encoding="utf-8"):
                record = json.loads(line)
                image = {"id": record["index"], "file_name": record["image"], "width": size, "height": size}
                out.write(("" if first else ",\n") + json.dumps(image))
                first = False
        out.write('\n],\n"annotations": [\n')
        first, annotation_id = True, 1
        if spool.is_file():
            for line in spool.open(encoding="utf-8"):
                record = json.loads(line)
                for finding in record["findings"]:
                    for box in finding["boxes"]:
                        annotation = {
                            "id": annotation_id,
                            "image_id": record["index"],
                            "category_id": category_ids[finding["kind"]],
                            "bbox": [round(float(v), 2) for v in box],
                            "area": round(float(box[2] * box[3]), 2),
                            "iscrowd": 0,
                            "label_text": finding["phrase"],
                        }
                        out.write(("" if first else ",\n") + json.dumps(annotation))
                        first, annotation_id = False, annotation_id + 1
        out.write("\n]}\n")


def prepare_output(out: str | Path) -> Path:
    """``out`` as a path, with its image and annotation folders; refused if it already holds a corpus."""
    out = Path(out)
    if (out / "manifest.csv").exists():
        raise ValueError(f"{out} already holds a corpus (manifest.csv); choose an empty folder")
    for split in SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    return out


def manifest_row(record: dict) -> dict:
    """The manifest.csv row of a worker's record: its findings reduced to kind and phrase, as JSON."""
    row = {k: record[k] for k in MANIFEST_COLUMNS if k != "findings"}
    row["findings"] = json.dumps([{k: f[k] for k in ("kind", "phrase")} for f in record["findings"]])
    return row


def generate_corpus(out: str | Path, spec: CorpusSpec, workers: int = 1, dicom_samples: int = 4) -> dict:
    """Write the corpus (see the module docstring) and return counts per split."""
    out = prepare_output(out)
    counts = dict.fromkeys(SPLITS, 0)
    jobs = [(i, spec, str(out)) for i in range(spec.n)]
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        spools = {split: Path(tmp) / f"{split}.jsonl" for split in SPLITS}
        handles = {split: spools[split].open("w", encoding="utf-8") for split in SPLITS}
        with (out / "manifest.csv").open("w", encoding="utf-8", newline="") as manifest:
            writer = csv.DictWriter(manifest, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            for record in tqdm(collect_results(jobs, workers), total=spec.n, desc="PhantomCXR", unit="img"):
                counts[record["split"]] += 1
                writer.writerow(manifest_row(record))
                handles[record["split"]].write(json.dumps(record) + "\n")
        for handle in handles.values():
            handle.close()
        for split in SPLITS:
            write_coco(out / "annotations" / f"{split}.json", spools[split], spec.size)
    if dicom_samples:
        (out / "dicom").mkdir(exist_ok=True)
        index, written = 0, 0
        while written < dicom_samples and index < spec.n:
            case, image, _ = generate_case(index, spec)
            if case.split == "test":
                path = out / "dicom" / f"{case.case_id}.dcm"
                write_dicom(path, image, monochrome1=written % 2 == 1, seed=spec.seed, index=index)
                written += 1
            index += 1
    provenance = {
        "format_version": FORMAT_VERSION,
        "n": spec.n,
        "size": spec.size,
        "seed": spec.seed,
        "split_fractions": list(spec.split_fractions),
        "counts": counts,
        "note": "synthetic images generated by training.phantoms; no real patient data",
    }
    (out / "generation.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return counts
