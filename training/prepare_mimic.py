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
import multiprocessing
import os
import re
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from afloc.commands import command
from afloc.imaging.transforms import pad_resize
from afloc.text.tokenizer import split_sentences
from training.manifest import SPLIT_ALIASES

logger = logging.getLogger(__name__)

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
MANIFEST_COLUMNS = ("image", "report", "split", "dicom_id", "study_id", "subject_id", "view")
SECTIONS = ("FINDINGS", "IMPRESSION")
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

# A section header starts a line: "FINDINGS:", " IMPRESSION:  text". Any ALL-CAPS name ends the previous
# section; findings/impression are also recognised in mixed case ("Impression:").
_HEADER = re.compile(r"^[ \t]*([A-Za-z][A-Za-z /&(),-]*?)[ \t]*:", re.MULTILINE)
_SECTION_NAMES = {
    "findings": "FINDINGS",
    "finding": "FINDINGS",
    "impression": "IMPRESSION",
    "impressions": "IMPRESSION",
}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def extract_sections(report: str) -> dict[str, str]:
    """The FINDINGS and IMPRESSION sections of a free-text report, whitespace collapsed to single spaces.

    A section runs from its header to the next header (an ALL-CAPS ``NAME:`` at the start of a line, or a
    findings/impression header in any case) or the end of the text; repeated sections are concatenated.

    Returns:
        ``{"FINDINGS": ..., "IMPRESSION": ...}`` with only the sections that have a header (bodies may be "").
    """
    headers = []
    for match in _HEADER.finditer(report):
        name = match.group(1).strip()
        letters = name.replace(" ", "")
        if name.lower() in _SECTION_NAMES or (len(letters) >= 2 and name == name.upper()):
            headers.append(match)
    sections: dict[str, str] = {}
    for index, match in enumerate(headers):
        section = _SECTION_NAMES.get(match.group(1).strip().lower())
        if section is None:
            continue
        end = headers[index + 1].start() if index + 1 < len(headers) else len(report)
        body = " ".join(report[match.end() : end].split())
        sections[section] = f"{sections[section]} {body}".strip() if section in sections else body
    return sections


def build_report(report: str) -> tuple[str, str | None]:
    """The manifest text ``"FINDINGS: ... IMPRESSION: ..."`` of a raw report, or why it is skipped.

    A section whose body has no sentence left after :func:`~afloc.text.tokenizer.split_sentences` (e.g. only "___.") is
    left out, so that its header word does not become a sentence of its own downstream.

    Returns:
        ``(text, None)``, or ``("", "no_findings_impression")`` / ``("", "empty_report")``.
    """
    sections = extract_sections(report)
    if not sections:
        return "", "no_findings_impression"
    parts = [f"{name}: {sections[name]}" for name in SECTIONS if split_sentences(sections.get(name, ""))]
    if not parts:
        return "", "empty_report"
    return " ".join(parts), None


@dataclass(frozen=True)
class _Image:
    dicom_id: str
    subject_id: str
    study_id: str
    view: str
    split: str

    @property
    def key(self) -> str:
        """``pXX/pXXXXXXXX/sYYYYYYYY/<dicom_id>``: the id used in examples, and the path in both trees."""
        return f"p{self.subject_id[:2]}/p{self.subject_id}/s{self.study_id}/{self.dicom_id}"


@dataclass(frozen=True)
class _StudyJob:
    report_path: str
    jpg_files: str
    out: str
    size: int
    images: tuple[_Image, ...]


def is_valid_png(path: Path, size: int) -> bool:
    """Whether ``path`` is a complete 8-bit greyscale ``size x size`` PNG (header and IEND checked, no decoding)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(26)
            handle.seek(-len(_PNG_END), os.SEEK_END)
            tail = handle.read()
    except OSError:
        return False
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return False
    width, height = struct.unpack(">II", head[16:24])
    return (width, height, head[24], head[25]) == (size, size, 8, 0) and tail == _PNG_END


def _decode_grayscale(data: bytes) -> np.ndarray:
    """Decode like the reference (``cv2.IMREAD_GRAYSCALE``, uint8), refusing what cv2 would half-decode."""
    if not data:
        raise ValueError("empty file")
    # Some cv2/libjpeg builds decode a truncated JPEG with only a warning (grey bottom rows). FF D9 cannot occur
    # inside entropy-coded data (FF is stuffed there), so a missing end-of-image marker means a cut file.
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise ValueError("truncated JPEG (no end-of-image marker)")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    except cv2.error as error:
        raise ValueError(f"cv2 cannot decode it ({error})") from error
    if image is None:
        raise ValueError("not a decodable image")
    if min(image.shape[:2]) < 2:
        raise ValueError(f"image of size {image.shape[0]}x{image.shape[1]} is too small")
    return image


def _convert(jpg: Path, png: Path, size: int) -> str:
    """Write the pad-resized PNG unless a valid one exists; returns ``"reused"``/``"written"`` or a skip reason."""
    if is_valid_png(png, size):
        return "reused"
    try:
        data = jpg.read_bytes()
    except FileNotFoundError:
        return "missing_image"
    except OSError as error:
        logger.warning("cannot read %s: %s", jpg, error)
        return "corrupt_image"
    try:
        padded, _ = pad_resize(_decode_grayscale(data), size)
    except ValueError as error:
        logger.warning("skipping %s: %s", jpg, error)
        return "corrupt_image"
    ok, encoded = cv2.imencode(".png", padded)
    if not ok:  # pragma: no cover - cv2 encodes any 2-D uint8 array
        raise RuntimeError(f"cv2 could not encode {png}")
    png.parent.mkdir(parents=True, exist_ok=True)
    temporary = png.with_name(f".{png.name}.{os.getpid()}.tmp")
    temporary.write_bytes(encoded.tobytes())
    os.replace(temporary, png)  # atomic: an interrupted run never leaves a partial PNG under the final name
    return "written"


def _process_study(job: _StudyJob) -> list[tuple[_Image, str, str]]:
    """Per image of a study: ``(image, outcome, report)``; outcome is written/reused or a skip reason."""
    try:
        raw = Path(job.report_path).read_text(encoding="utf-8", errors="replace")
    except OSError as error:  # counted, not fatal: one unreadable file must not stop a 200K-study run
        if not isinstance(error, FileNotFoundError):
            logger.warning("cannot read report %s: %s", job.report_path, error)
        return [(image, "missing_report", "") for image in job.images]
    report, reason = build_report(raw)
    if reason is not None:
        return [(image, reason, "") for image in job.images]
    results = []
    for image in job.images:
        jpg = Path(job.jpg_files) / f"{image.key}.jpg"
        png = Path(job.out) / "images" / f"{image.key}.png"
        results.append((image, _convert(jpg, png, job.size), report))
    return results


def _run_jobs(jobs: list[_StudyJob], workers: int) -> Iterator[list[tuple[_Image, str, str]]]:
    if workers <= 1:
        yield from map(_process_study, jobs)
        return
    # Workers never fork this (possibly multi-threaded: torch, cv2, tqdm) process. A fork server imports this
    # module once (afloc pulls in torch: seconds) and forks the workers from that clean process; spawn, which
    # imports it again in every worker, is the fallback where fork servers do not exist (Windows).
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["training.prepare_mimic"])
    else:  # pragma: no cover - Windows
        context = multiprocessing.get_context("spawn")
    chunksize = max(1, min(64, len(jobs) // (workers * 8)))
    with context.Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        yield from pool.imap_unordered(_process_study, jobs, chunksize=chunksize)


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
) -> list[_Image]:
    """Frontal images with a split, in metadata order (at most ``limit``); others are counted in ``summary``."""
    selected: list[_Image] = []
    seen: set[str] = set()
    for number, row in _read_csv(metadata, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        dicom_id, subject_id, study_id = (str(row[c] or "").strip() for c in ("dicom_id", "subject_id", "study_id"))
        if not _ID.fullmatch(dicom_id) or not subject_id.isdigit() or not study_id.isdigit() or len(subject_id) < 2:
            raise ValueError(f"{metadata}, line {number}: malformed dicom_id/subject_id/study_id")
        if dicom_id in seen:
            continue
        seen.add(dicom_id)
        view = str(row["ViewPosition"] or "").strip().upper()
        image = _Image(dicom_id, subject_id, study_id, view, splits.get(dicom_id, ""))
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
    studies: dict[tuple[str, str], list[_Image]] = {}
    for image in selected:
        studies.setdefault((image.subject_id, image.study_id), []).append(image)
    jobs = [
        _StudyJob(
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
        for results in _run_jobs(jobs, workers):
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
