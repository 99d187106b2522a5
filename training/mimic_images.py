"""MIMIC-CXR-JPG films to pad-resized 8-bit PNGs, one study per job, in worker processes (used by
:mod:`training.prepare_mimic`).

A PNG that already exists and is complete (valid signature, ``size x size`` 8-bit greyscale header, IEND chunk) is
kept; new ones are written to a temporary name and renamed, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from afloc.imaging.transforms import pad_resize

from .mimic_reports import build_report

logger = logging.getLogger(__name__)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class StudyImage:
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
class StudyJob:
    report_path: str
    jpg_files: str
    out: str
    size: int
    images: tuple[StudyImage, ...]


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


def _process_study(job: StudyJob) -> list[tuple[StudyImage, str, str]]:
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


def run_jobs(jobs: list[StudyJob], workers: int) -> Iterator[list[tuple[StudyImage, str, str]]]:
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
