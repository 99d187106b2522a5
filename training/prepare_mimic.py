"""Turn MIMIC-CXR-JPG + MIMIC-CXR reports into a manifest of pad-resized PNGs (the reference's offline step).

Input (PhysioNet layouts, docs/method.md section 6)::

    <jpg-root>/mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, ...
    <jpg-root>/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, split (train / validate / test)
    <jpg-root>/files/pXX/pXXXXXXXX/sYYYYYYYY/<dicom_id>.jpg
    <reports-root>/files/pXX/pXXXXXXXX/sYYYYYYYY.txt   (or <reports-root>/pXX/... directly)

Output::

    <out>/images/pXX/pXXXXXXXX/sYYYYYYYY/<dicom_id>.png   8-bit greyscale, size x size (reference pad-resize)
    <out>/manifest.csv          image (relative to <out>), report, split, dicom_id, study_id, subject_id, view
    <out>/prepare_summary.json  what was kept, and what was skipped and why (counts + up to 20 examples)

Every image is counted once, under the first reason it fails, checked in the order of :data:`SKIP_REASONS`.
The run is resumable: a PNG that already exists (valid PNG signature, ``size x size`` 8-bit greyscale header,
complete up to its IEND chunk) is kept as is. PNGs are written to a temporary name and renamed, so an
interrupted run never leaves a half-written file under the final name. The manifest is rebuilt from all kept
records at the end of every run (sorted by dicom_id), so rerunning after an interruption finishes the job.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from afloc.commands import command
from training.manifest import SPLIT_ALIASES

from .mimic_images import StudyImage, StudyJob, run_jobs

logger = logging.getLogger(__name__)

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
MANIFEST_COLUMNS = ("image", "report", "split", "dicom_id", "study_id", "subject_id", "view")
MAX_EXAMPLES = 20
SKIP_REASONS = {
    "not_frontal": "not frontal (ViewPosition not in the selected views)",
    "not_in_split": "dicom_id absent from the split CSV",
    "missing_report": "missing report file",
    "no_findings_impression": "no findings/impression section",
    "empty_report": "empty report (no sentence left after cleaning)",
    "missing_image": "missing image",
    "corrupt_image": "unreadable/corrupt image",
}
"""Skip reasons, in the order they are checked; every count is a number of images (dicom_ids)."""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class PrepareSummary:
    """What :func:`prepare_mimic` did. Counts are numbers of images (dicom_ids)."""

    out: Path
    size: int
    views: tuple[str, ...]
    limit: int | None
    kept: int = 0
    splits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("train", "val", "test"), 0))
    written: int = 0
    reused: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: {reason: [] for reason in SKIP_REASONS})
    seconds: float = 0.0

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples[reason]) < MAX_EXAMPLES:
            self.examples[reason].append(example)

    def to_dict(self) -> dict:
        return {
            "manifest": "manifest.csv",
            "size": self.size,
            "views": list(self.views),
            "limit": self.limit,
            "unit": "images (dicom_id); example ids are pXX/pXXXXXXXX/sYYYYYYYY/<dicom_id>",
            "kept": self.kept,
            "splits": dict(self.splits),
            "images_written": self.written,
            "images_reused": self.reused,
            "skipped": {
                reason: {"description": SKIP_REASONS[reason], "count": count, "examples": self.examples[reason]}
                for reason, count in self.skipped.items()
            },
            "seconds": round(self.seconds, 2),
        }

    def format(self) -> str:
        splits = ", ".join(f"{name} {count}" for name, count in self.splits.items())
        lines = [
            f"kept {self.kept} images ({splits}) in {self.out / 'manifest.csv'}; "
            f"PNGs written {self.written}, reused {self.reused}; {self.seconds:.1f} s",
            f"skipped {sum(self.skipped.values())} images:",
        ]
        for reason, count in self.skipped.items():
            example = f"  e.g. {self.examples[reason][0]}" if count else ""
            lines.append(f"  {SKIP_REASONS[reason]:<52} {count:>8}{example}")
        return "\n".join(lines)


def _files_dir(root: str | Path, option: str, marker: str) -> Path:
    """``root/files`` when it exists, else ``root`` itself when it holds ``pXX`` folders directly."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{option} {str(root)!r} does not exist or is not a folder")
    if (root / "files").is_dir():
        return root / "files"
    if any(child.is_dir() and re.fullmatch(r"p\d\d", child.name) for child in root.iterdir()):
        return root
    raise ValueError(f"{option} {str(root)!r} holds neither a 'files' folder nor pXX folders ({marker})")


def _find_csv(explicit: str | Path | None, root: Path, name: str, option: str) -> Path:
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ValueError(f"{option} {str(path)!r} does not exist")
        return path
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise ValueError(f"{name} (or {name}.gz) not found in {str(root)!r}; pass {option}")


def _read_csv(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV or gzipped CSV with their line numbers; checks the header first."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in required if column not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing columns {missing} (found {reader.fieldnames})")
            yield from enumerate(reader, start=2)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: cannot read the CSV ({error})") from error


def _read_splits(path: Path) -> dict[str, str]:
    splits = {}
    for number, row in _read_csv(path, ("dicom_id", "split")):
        split = SPLIT_ALIASES.get((row["split"] or "").strip().lower())
        if split is None:
            raise ValueError(f"{path}, line {number}: unknown split {row['split']!r}")
        splits[(row["dicom_id"] or "").strip()] = split
    return splits


def _select(
    metadata: Path, splits: dict[str, str], views: tuple[str, ...], limit: int | None, summary: PrepareSummary
) -> list[StudyImage]:
    """Frontal images with a split, in metadata order (at most ``limit``); others are counted in ``summary``."""
    selected: list[StudyImage] = []
    seen: set[str] = set()
    for number, row in _read_csv(metadata, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        dicom_id, subject_id, study_id = (str(row[c] or "").strip() for c in ("dicom_id", "subject_id", "study_id"))
        if not _ID.fullmatch(dicom_id) or not subject_id.isdigit() or not study_id.isdigit() or len(subject_id) < 2:
            raise ValueError(f"{metadata}, line {number}: malformed dicom_id/subject_id/study_id")
        if dicom_id in seen:
            continue
        seen.add(dicom_id)
        view = str(row["ViewPosition"] or "").strip().upper()
        image = StudyImage(dicom_id, subject_id, study_id, view, splits.get(dicom_id, ""))
        if view not in views:
            summary.skip("not_frontal", image.key)
        elif not image.split:
            summary.skip("not_in_split", image.key)
        elif limit is None or len(selected) < limit:
            selected.append(image)
    return selected


def prepare_mimic(
    jpg_root: str | Path,
    reports_root: str | Path,
    out: str | Path,
    size: int = 224,
    workers: int = 1,
    limit: int | None = None,
    views: Sequence[str] = ("PA", "AP"),
    metadata: str | Path | None = None,
    split_csv: str | Path | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Write ``out/images``, ``out/manifest.csv`` and ``out/prepare_summary.json`` (see the module docstring).

    Args:
        jpg_root: MIMIC-CXR-JPG root (the CSVs and ``files/``).
        reports_root: MIMIC-CXR reports root (``files/pXX/...`` or ``pXX/...`` directly).
        out: output folder (created; existing valid PNGs are reused).
        size: side of the square PNGs.
        workers: processes (1 runs in this process).
        limit: keep at most this many frontal images (the first ones of the metadata CSV), for a quick look;
            non-frontal images are still counted over the whole CSV.
        views: accepted ViewPosition values (a sequence or a comma-separated string; case-insensitive).
        metadata, split_csv: explicit CSV paths instead of the ones in ``jpg_root``.
        progress: show a tqdm bar.

    Raises:
        ValueError: a root or CSV does not exist, a CSV lacks a column or holds a malformed value, or an
            argument is out of range.
    """
    start = time.perf_counter()
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    views = tuple(dict.fromkeys(v.strip().upper() for v in (views.split(",") if isinstance(views, str) else views)))
    views = tuple(v for v in views if v)
    if not views:
        raise ValueError("views must name at least one ViewPosition (e.g. PA,AP)")
    jpg_files = _files_dir(jpg_root, "--jpg-root", "expected files/pXX/pXXXXXXXX/sYYYYYYYY/<dicom_id>.jpg")
    report_files = _files_dir(reports_root, "--reports-root", "expected files/pXX/pXXXXXXXX/sYYYYYYYY.txt")
    csv_root = Path(jpg_root).expanduser()
    metadata_path = _find_csv(metadata, csv_root, METADATA_CSV, "--metadata")
    split_path = _find_csv(split_csv, csv_root, SPLIT_CSV, "--split-csv")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")

    summary = PrepareSummary(out=out, size=size, views=views, limit=limit)
    selected = _select(metadata_path, _read_splits(split_path), views, limit, summary)
    studies: dict[tuple[str, str], list[StudyImage]] = {}
    for image in selected:
        studies.setdefault((image.subject_id, image.study_id), []).append(image)
    jobs = [
        StudyJob(
            report_path=str(report_files / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}.txt"),
            jpg_files=str(jpg_files),
            out=str(out),
            size=size,
            images=tuple(images),
        )
        for (subject_id, study_id), images in studies.items()
    ]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tqdm(total=len(selected), desc="MIMIC-CXR", unit="img", disable=not progress) as bar:
        for results in run_jobs(jobs, workers):
            for image, outcome, report in results:
                if outcome in SKIP_REASONS:
                    summary.skip(outcome, image.key)
                    continue
                summary.written += outcome == "written"
                summary.reused += outcome == "reused"
                summary.splits[image.split] += 1
                rows.append(
                    {
                        "image": f"images/{image.key}.png",
                        "report": report,
                        "split": image.split,
                        "dicom_id": image.dicom_id,
                        "study_id": image.study_id,
                        "subject_id": image.subject_id,
                        "view": image.view,
                    }
                )
            bar.update(len(results))
    rows.sort(key=lambda row: row["dicom_id"])
    summary.kept = len(rows)
    temporary = out / ".manifest.csv.tmp"
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, out / "manifest.csv")
    summary.seconds = time.perf_counter() - start
    (out / "prepare_summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return summary


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training prepare-mimic",
        description="MIMIC-CXR-JPG frontal images + report FINDINGS/IMPRESSION -> pad-resized PNGs and manifest.csv",
    )
    parser.add_argument("--jpg-root", required=True, help="MIMIC-CXR-JPG 2.x root (CSVs and files/pXX/...)")
    parser.add_argument("--reports-root", required=True, help="MIMIC-CXR reports root (files/pXX/... or pXX/...)")
    parser.add_argument("--out", required=True, help="output folder (resumable: existing valid PNGs are kept)")
    parser.add_argument("--size", type=int, default=224, help="PNG side in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="at most N frontal images, for a quick look")
    parser.add_argument("--views", default="PA,AP", help="accepted ViewPosition values (default PA,AP)")
    parser.add_argument("--metadata", default=None, help=f"metadata CSV (default <jpg-root>/{METADATA_CSV}[.gz])")
    parser.add_argument("--split-csv", default=None, help=f"split CSV (default <jpg-root>/{SPLIT_CSV}[.gz])")
    args = parser.parse_args(argv)
    summary = prepare_mimic(
        args.jpg_root,
        args.reports_root,
        args.out,
        size=args.size,
        workers=args.workers,
        limit=args.limit,
        views=args.views.split(","),
        metadata=args.metadata,
        split_csv=args.split_csv,
    )
    print(summary.format())
    print(f"summary written to {summary.out / 'prepare_summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
