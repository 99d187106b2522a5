"""One user's state in the demo, with bounded memory and files that are deleted when the session ends.

Memory: the decoded image, its encoding (whose heatmap cache is bounded in bytes, at model resolution), the
current prompts' heatmaps at model resolution, and the one heatmap on display upsampled to the original pixels.
Nothing grows with the number of Localize calls (``tests/test_demo_hardening.py`` measures it).

Files: everything this session shows or offers for download is written into its own folder (inside Gradio's
cache folder, so Gradio serves it in place instead of copying it). Only the last :data:`KEEP_VIEWS` rendered
images per kind and the last :data:`KEEP_EXPORTS` exports are kept; :meth:`Session.close` deletes the folder.
"""

from __future__ import annotations

import html
import re
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from afloc.imaging.boxes import Box
from afloc.localization.heatmaps import centre_prior, scale_to_unit_range
from afloc.localization.overlay import save_png
from afloc.predictor import AFLocPredictor, EncodedImage, ZeroShotResult

from .annotations import category

KEEP_VIEWS = 3  # a browser may still be fetching the previous image when the next one is written
KEEP_EXPORTS = 5
ENCODED_CACHE_BYTES = 8 << 20  # model-space heatmaps kept per image (40 prompts at 224 px)
# what can open emphasis, links, images, code or tables (an underscore inside a word cannot: max_pixels stays)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]#|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def escape_markdown(text: str) -> str:
    """``text`` shown literally in Gradio Markdown: no HTML, links, images, emphasis or code from it.

    HTML special characters become entities, the Markdown characters that open links, images, emphasis, code
    and tables are backslash-escaped, and ``://`` is broken up so that no bare URL becomes a link.
    """
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("://", ":\\/\\/")
    return html.escape(escaped, quote=False)


@dataclass(eq=False)
class Session:
    """One user's state: the image, its encoding (per model), heatmaps per prompt, ground truth, files.

    ``encoded`` is ``predictor``'s :class:`afloc.EncodedImage`, whose own cache holds the current prompts'
    heatmaps at model resolution (``S x S``; no second cache here); :meth:`heatmap` upsamples one to the original
    pixels and keeps only that one. A redraw (threshold, opacity, prompt selector, ground truth) never runs the
    image encoder.
    """

    export_dir: Path | None = None
    image: np.ndarray | None = None
    image_name: str = ""
    modality: str = "cxr"
    model_key: str | None = None
    model_name: str = ""
    model_digest: str = ""
    model_synthetic: bool | None = None
    encoded: EncodedImage | None = None
    predictor: AFLocPredictor | None = None
    prompts: list[str] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)  # calibrated only: what the panel shows
    zero_shot: dict[str, ZeroShotResult] = field(default_factory=dict)  # every finding asked, calibrated or not
    unseen: dict[str, list[str]] = field(default_factory=dict)  # prompt -> findings it names the model never saw
    boxes: list[Box] = field(default_factory=list)
    chosen_labels: dict[str, str] = field(default_factory=dict)  # prompt -> box label to score it against
    yolo_names: list[str] = field(default_factory=list)  # class names of YOLO boxes (a names file or a preset)
    inverted: bool = False  # the film was inverted by the user (the model sees the inverted film)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    closed: bool = False
    released: bool = False  # its arrays were given up to keep all sessions under the memory budget
    last_used: float = field(default_factory=time.monotonic, repr=False)
    _shown: tuple[str, np.ndarray] | None = field(default=None, repr=False)
    _prior: np.ndarray | None = field(default=None, repr=False)
    _memo: tuple | None = field(default=None, repr=False)  # (key, value) of the last threshold-free scores
    _views: dict[str, deque] = field(default_factory=dict, repr=False)
    _exports: deque = field(default_factory=deque, repr=False)

    def reset_results(self) -> None:
        self.prompts, self.probabilities, self.zero_shot, self.unseen, self._shown = [], {}, {}, {}, None

    def set_encoded(self, encoded: EncodedImage | None, predictor: AFLocPredictor | None = None) -> None:
        """A new encoding (new image or model) and the predictor that made it; its heatmap cache is bounded by
        :data:`ENCODED_CACHE_BYTES`."""
        if encoded is not None:
            encoded.heatmap_cache_bytes = ENCODED_CACHE_BYTES
        self.encoded, self.predictor = encoded, predictor if encoded is not None else None
        self._prior, self._memo = None, None
        self.reset_results()

    def memo(self, key, make):
        """``make()``, kept for the next call with the same ``key`` (one entry: what a threshold move reuses)."""
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, make())
        return self._memo[1]

    def set_boxes(self, boxes: list[Box]) -> None:
        """New ground truth; labels chosen for the old boxes no longer apply."""
        self.boxes, self.chosen_labels = list(boxes), {}

    def box_labels(self) -> list[str]:
        """The distinct categories of the ground-truth boxes' labels, sorted (what a prompt can be scored against)."""
        return sorted({category(box.label) for box in self.boxes if box.label.strip()})

    def centre_prior(self) -> np.ndarray:
        """The centre prior on this image's pixels, on ``[-1, 1]`` like a heatmap (made once per image)."""
        if self._prior is None or self._prior.shape != self.image.shape[:2]:
            self._prior = scale_to_unit_range(centre_prior(*self.image.shape[:2])[None])[0]
        return self._prior

    @property
    def has_results(self) -> bool:
        """Whether there are heatmaps to draw: prompts localized on an encoding still held."""
        return bool(self.prompts) and self.encoded is not None and self.image is not None

    def heatmap(self, prompt: str) -> np.ndarray:
        """The heatmap of ``prompt`` on the original pixels ``[H, W]``: from the encoding's cache (recomputed from
        the kept embeddings if the cache dropped it), upsampled once and kept while shown."""
        if self._shown is None or self._shown[0] != prompt:
            model_space = self.predictor.localize(prompt, image=self.encoded, space="model")
            self._shown = (prompt, self.encoded.mapping.heatmap_to_original(model_space))
        return self._shown[1]

    def memory_bytes(self) -> int:
        """Bytes of the arrays this session holds (image, the heatmap on display, the encoding and its cache)."""
        arrays = [self.image, self._shown[1] if self._shown else None, self._prior]
        total = sum(a.nbytes for a in arrays if a is not None)
        if self.encoded is not None:
            tensors = (self.encoded.patch_embeddings, self.encoded.shallow_patch_embeddings)
            total += self.encoded.cached_heatmap_bytes + sum(t.element_size() * t.nelement() for t in tensors)
        return total

    # ------------------------------------------------------------------ files
    def folder(self) -> Path:
        if self.export_dir is None:
            import tempfile

            self.export_dir = Path(tempfile.mkdtemp(prefix="afloc-demo-"))
        self.export_dir.mkdir(parents=True, exist_ok=True)
        return self.export_dir

    def save_view(self, kind: str, image: np.ndarray | None) -> str | None:
        """Write a rendered RGB image as PNG into the session folder; older ones of the same kind are deleted."""
        if image is None or self.closed:
            return None
        path = self.folder() / f"{kind}-{uuid.uuid4().hex[:10]}.png"
        save_png(path, image)
        kept = self._views.setdefault(kind, deque())
        kept.append(path)
        while len(kept) > KEEP_VIEWS:
            kept.popleft().unlink(missing_ok=True)
        return str(path)

    def add_export(self, files: list[Path]) -> None:
        """Remember an export's files; the oldest exports beyond :data:`KEEP_EXPORTS` are deleted."""
        self._exports.append(files)
        while len(self._exports) > KEEP_EXPORTS:
            for path in self._exports.popleft():
                path.unlink(missing_ok=True)

    def touch(self) -> None:
        """Mark the session as just used (the memory budget releases the least recently used first)."""
        self.last_used = time.monotonic()

    def release(self) -> int:
        """Give up the large arrays (image, encoding, heatmaps) but keep the session and its files; returns the
        bytes freed (0 when the session is busy: a request holding its lock is using it, and another request
        must never wait for it). The user is told to load the image again."""
        if not self.lock.acquire(blocking=False):
            return 0
        try:
            freed = self.memory_bytes()
            self.image = None
            self.set_encoded(None)
            self.set_boxes([])
            self.released = True
            return freed
        finally:
            self.lock.release()

    def close(self) -> None:
        """Free the arrays and delete the session's folder (rendered images and exports)."""
        with self.lock:
            self.closed = True
            self.image = None
            self.set_encoded(None)
            self.set_boxes([])
            if self.export_dir is not None:
                shutil.rmtree(self.export_dir, ignore_errors=True)


def discard_upload(path: str | Path | None, upload_root: Path) -> None:
    """Delete an uploaded file once it has been read (and its folder if now empty); only inside ``upload_root``."""
    if not path:
        return
    try:
        file, root = Path(path).resolve(), upload_root.resolve()
    except (OSError, RuntimeError):
        return
    if root not in file.parents or not file.is_file():
        return
    file.unlink(missing_ok=True)
    try:
        if file.parent != root:
            file.parent.rmdir()  # fails (and is skipped) unless empty
    except OSError:
        pass


def sweep_empty_temp_files(upload_root: Path, min_age_s: float = 10.0, abandoned_age_s: float = 60.0) -> int:
    """Delete the ``tmp*`` files Gradio's upload route leaves directly in its cache folder.

    Empty ones (one per upload, 0 bytes) once older than ``min_age_s``; any other one once untouched for
    ``abandoned_age_s`` (an upload whose move into its folder failed, or whose client went away mid-upload: one
    still being written has a fresh modification time). Returns how many were deleted.
    """
    import time

    deleted, now = 0, time.time()
    try:
        candidates = list(upload_root.glob("tmp*"))
    except OSError:
        return 0
    for path in candidates:
        try:
            info = path.lstat()
            if not path.is_file() or path.is_symlink():
                continue
            age = now - info.st_mtime
            if (info.st_size == 0 and age > min_age_s) or age > abandoned_age_s:
                path.unlink()
                deleted += 1
        except OSError:
            continue
    return deleted


ORPHAN_UPLOAD_AGE_S = 60.0  # an upload is decoded (and deleted) at once; one still there after this was never used


def sweep_orphan_uploads(upload_root: Path, since: float, min_age_s: float = ORPHAN_UPLOAD_AGE_S) -> int:
    """Delete uploads that no event consumed: Gradio stores a file before the event runs, and an event refused
    before the demo's code sees it (e.g. a stale model choice) leaves the file in ``upload_root/<hash>/``.

    Only regular files one folder below ``upload_root`` (Gradio's upload layout), outside the demo's own
    ``afloc-sessions`` folder, created after ``since`` (the server's start, so files Gradio cached when the page
    was built stay) and untouched for ``min_age_s``. Empty folders go too once untouched for ``min_age_s``.
    Returns how many files were deleted.
    """
    import time

    deleted, now = 0, time.time()
    try:
        folders = [p for p in upload_root.iterdir() if p.name != "afloc-sessions" and p.is_dir() and not p.is_symlink()]
    except OSError:
        return 0
    for folder in folders:
        try:
            files = list(folder.iterdir())
        except OSError:
            continue
        for path in files:
            try:
                info = path.lstat()
                if not path.is_file() or path.is_symlink():
                    continue
                if info.st_ctime >= since and now - info.st_mtime > min_age_s:
                    path.unlink()
                    deleted += 1
            except OSError:
                continue
        try:
            # only when empty and old: Gradio creates an upload's folder, then moves the file in (a folder removed
            # in between would lose that upload)
            if now - folder.lstat().st_mtime > min_age_s:
                folder.rmdir()
        except OSError:
            pass
    return deleted


def release_freed_memory() -> bool:
    """Hand memory that Python and numpy have freed back to the operating system (glibc's ``malloc_trim``).

    The server's request threads each get a glibc arena; freed images and heatmaps leave free pages there that
    count as resident memory until trimmed. Returns False where there is no glibc (nothing is done).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


class MemoryBudget:
    """All sessions' arrays together stay under ``max_bytes``: when one session grows (an image loaded, heatmaps
    made) and the total is over, the least recently used *other* sessions give up their arrays first.

    A client that never opens the heartbeat (a plain HTTP client) keeps its session until the state's expiry;
    under this budget such sessions are the first to be released, so they cannot pin memory that users need.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"the memory budget must be > 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes

    def enforce(self, current: Session, sessions) -> int:
        """Release least recently used sessions other than ``current`` until the total fits; returns how many."""
        others = sorted((s for s in sessions if s is not current and not s.closed), key=lambda s: s.last_used)
        total = current.memory_bytes() + sum(s.memory_bytes() for s in others)
        released = 0
        for session in others:
            if total <= self.max_bytes:
                break
            freed = session.release() if session.memory_bytes() else 0
            if freed:
                total -= freed
                released += 1
        return released
