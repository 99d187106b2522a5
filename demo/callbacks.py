"""The demo's logic as plain functions over a per-session :class:`Session` (no gradio import).

Each UI event maps to one function here; ``demo/app.py`` only wires components to them, so tests call these
directly. Bad input never raises: functions return a :class:`Status` with a readable message instead.
Coordinates: boxes are ``[x, y, w, h]`` in original image pixels (COCO convention, origin at the top-left
corner of the top-left pixel); heatmaps are ``[H, W]`` on the original pixels in ``[-1, 1]``, NaN undefined.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from afloc.imaging.boxes import Box, boxes_to_mask
from afloc.imaging.io import load_image_with_info
from afloc.localization.metrics import localization_metrics
from afloc.localization.overlay import (
    BOX_COLOR,
    CONTOUR_COLOR,
    add_colorbar,
    add_legend,
    render_overlay,
    to_rgb_uint8,
)
from afloc.predictor import MAX_PROMPT_CHARS
from afloc.text.prompts import FINDINGS_BY_MODALITY
from afloc.text.tokenizer import normalize_prompt, split_sentences

from .annotations import (
    boxes_for_prompt,
    boxes_to_text,
    check_boxes,
    example_boxes,
    parse_boxes_text,
    read_annotations,
)
from .messages import notice_text, plain_message, read_head
from .session import Session, escape_markdown

MAX_PIXELS = 50_000_000  # 50 MP: larger films are refused (from the header, before decoding)
MAX_PROMPTS = 8  # every prompt keeps a float32 heatmap at model resolution in the session
NOTICE = "Research use only. Not a medical device; not validated for diagnosis or any clinical decision."


@dataclass
class Status:
    message: str = ""
    error: bool = False


@dataclass
class Example:
    name: str
    image_path: Path
    prompt: str
    modality: str
    boxes: list[Box]


DEFAULT_THRESHOLD = 0.3
"""Where the demo's threshold slider starts: the contour of heatmap > t and the IoU/Dice threshold."""
DEFAULT_OPACITY = 0.5


@dataclass
class View:
    """What the output panel shows for one prompt: figure = overlay + colour bar + legend."""

    prompt: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    opacity: float = DEFAULT_OPACITY
    figure: np.ndarray | None = None
    overlay: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    metrics: dict[str, float] | None = None
    metrics_text: str = ""
    notice: str = ""
    scored_boxes: list[Box] = field(default_factory=list)
    boxes_matched: bool = False  # the scored boxes' labels match the prompt (else: unlabelled boxes, all scored)


# ------------------------------------------------------------------------------------------------ image
def load_image(
    session: Session, source, name: str = "", max_pixels: int = MAX_PIXELS, decode=load_image_with_info
) -> tuple[np.ndarray | None, Status]:
    """Decode an upload (format by content, DICOM windowed) into the session; returns the film to display.

    ``decode(source, max_pixels=...)`` reads the file: the server passes its :class:`demo.decoding.DecodeWorker`
    (a limited child process); the default reads in the calling thread.
    """
    if source is None:
        return None, Status("No file was uploaded.", error=True)
    name = name or (Path(source).name if isinstance(source, (str, Path)) else "image")
    try:
        image, info = decode(source, max_pixels=max_pixels)
    except ValueError as error:
        clear_image(session)  # the previous film, its heatmaps and boxes never stay behind a refused upload
        return None, Status(plain_message(str(error), read_head(source), name, max_pixels), error=True)
    session.image, session.image_name, session.released = image, name, False
    session.modality = "fundus" if image.ndim == 3 else "cxr"
    session.set_encoded(None)
    session.model_key = None
    session.boxes = []
    kind = "colour, fundus presets" if image.ndim == 3 else "greyscale, chest X-ray presets"
    return to_rgb_uint8(image), Status(f"Loaded {name}: {info.format.upper()}, {info.width}x{info.height} ({kind}).")


def clear_image(session: Session) -> None:
    """Forget the film, its encoding, heatmaps and ground truth (a new upload attempt, or the upload cleared)."""
    session.image, session.image_name = None, ""
    session.set_encoded(None)
    session.model_key = None
    session.boxes = []


def list_examples(folder: Path) -> list[Example]:
    """The examples in ``folder``: one JSON per image (image, suggested_prompt, modality, findings with boxes)."""
    examples = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            boxes = example_boxes(data)
            examples.append(
                Example(
                    path.stem, path.parent / data["image"], data["suggested_prompt"], data.get("modality", "cxr"), boxes
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a broken example is skipped, not fatal
    return examples


def load_example(session: Session, example: Example, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray | None, Status]:
    display, status = load_image(session, example.image_path, example.image_path.name, max_pixels)
    if not status.error:
        session.boxes, session.modality = list(example.boxes), example.modality
    return display, status


# ------------------------------------------------------------------------------------------------ prompts
def insert_presets(text: str | None, chosen) -> str:
    """The findings box with the chosen presets appended (those it already holds, in any case, are not repeated)."""
    current = [p.strip() for p in re.split(r"[,\n\r]", text or "") if p.strip()]
    lowered = {" ".join(p.lower().split()) for p in current}
    added = [str(p).strip() for p in chosen or () if " ".join(str(p).lower().split()) not in lowered]
    return ", ".join(current + added)


def parse_prompts(text: str | None, presets=()) -> tuple[list[str], str]:
    """Prompts from comma/newline-separated text plus presets, and a note on dropped non-ASCII characters.

    Raises:
        ValueError: no prompt, too many, one over ``MAX_PROMPT_CHARS``, or one with no ASCII word left.
    """
    pieces = [p.strip() for p in re.split(r"[,\n\r]", text or "")] + [str(p).strip() for p in presets or ()]
    unique: dict[str, str] = {}  # one prompt per finding whatever its case and spacing: the first spelling stays
    for piece in filter(None, pieces):
        unique.setdefault(" ".join(piece.lower().split()), piece)
    prompts = list(unique.values())
    if not prompts:
        raise ValueError("Type a finding to localize (e.g. 'left pleural effusion') or pick a preset.")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"{len(prompts)} prompts given; at most {MAX_PROMPTS} at a time.")
    note = ""
    for prompt in prompts:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"A prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}.")
        if not split_sentences(prompt, min_tokens=1):
            raise ValueError(
                f"Nothing is left of the prompt {prompt[:40]!r} after text cleaning: only ASCII letters and digits "
                "are used (non-ASCII letters are dropped). Please type the finding in English."
            )
        if not prompt.isascii():
            note = " Non-ASCII characters were dropped from the prompt text."
    return prompts, note


RELEASED = (
    "This session's image was released to keep the server's memory within its budget (the session was idle, or "
    "other users needed the memory): load the image again."
)


def _no_image(session: Session, message: str) -> Status:
    return Status(RELEASED if session.released else message, error=True)


def localize(session: Session, model, text: str | None, presets=()) -> Status:
    """Heatmaps for every prompt and zero-shot probabilities; the image is encoded once per model."""
    if session.image is None:
        return _no_image(session, "Upload an image or pick an example first.")
    try:
        prompts, note = parse_prompts(text, presets)
        predictor = model.predictor
        if session.encoded is None or session.model_key != model.key:
            session.set_encoded(predictor.encode_image(session.image), predictor)
            session.model_key, session.model_name = model.key, model.name
            session.model_digest, session.model_synthetic = model.digest, model.synthetic
        predictor.localize(prompts, image=session.encoded, space="model")  # into the encoding's cache
        results = predictor.zero_shot_results(list(FINDINGS_BY_MODALITY[session.modality]), image=session.encoded)
    except ValueError as error:
        return Status(str(error), error=True)
    session.reset_results()
    session.prompts, session.zero_shot = prompts, results
    session.probabilities = {f: r.probability for f, r in results.items() if r.probability is not None}
    session.unseen = {prompt: predictor.unseen_findings(prompt) for prompt in prompts}
    return Status(f"Localized {len(prompts)} prompt(s) with {model.name}.{note}")


# ------------------------------------------------------------------------------------------------ rendering
def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _clamped(value, low: float, high: float, default: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return min(max(value, low), high) if math.isfinite(value) else default


def render(session: Session, selected: str | None, threshold: float, opacity: float) -> View:
    """Draw the heatmap of ``selected`` (default: the first prompt) with its contour, boxes and metrics."""
    if not session.has_results:
        return View()
    prompt = selected if selected in session.prompts else session.prompts[0]
    heatmap = session.heatmap(prompt)
    threshold, opacity = _clamped(threshold, -1.0, 1.0, DEFAULT_THRESHOLD), _clamped(opacity, 0.0, 1.0, DEFAULT_OPACITY)
    scored, matched = boxes_for_prompt(session.boxes, prompt)
    overlay = render_overlay(
        session.image,
        heatmap,
        opacity=opacity,
        threshold=threshold,
        boxes=[box[:4] for box in scored] or None,
        box_labels=[box.label.split(":")[0].strip() for box in scored] or None,
    )
    legend_prompt = normalize_prompt(prompt)
    legend_prompt = legend_prompt if len(legend_prompt) <= 60 else legend_prompt[:57] + "..."
    entries = [(f"'{legend_prompt}' > {threshold:g}", CONTOUR_COLOR)] + (
        [("ground truth", BOX_COLOR)] if scored else []
    )
    figure = add_legend(add_colorbar(overlay, threshold=threshold), entries)
    view = View(prompt, threshold, opacity, figure, overlay, heatmap, scored_boxes=scored, boxes_matched=bool(matched))
    view.notice = notice_text(session, prompt)
    if not scored and session.boxes:
        labels = sorted({box.label.split(":")[0].strip() for box in session.boxes if box.label.strip()})
        view.metrics_text = (
            f"No metrics: no ground-truth box is labelled like '{escape_markdown(prompt)}' (labels here: "
            f"{escape_markdown(', '.join(labels[:8]))}). Localize one of those findings, or edit the box labels."
        )
        return view
    if not scored:
        view.metrics_text = "No ground truth: pick an example, upload an annotation file or type boxes to see metrics."
        return view
    view.metrics = localization_metrics(heatmap, boxes_to_mask(scored, *heatmap.shape), threshold)
    hit = {1.0: "hit", 0.0: "miss"}.get(view.metrics["pointing_game"], "n/a")
    which = "labelled like the prompt" if matched else "(unlabelled: all boxes)"
    view.metrics_text = (
        f"**IoU** {_fmt(view.metrics['iou'])} · **Dice** {_fmt(view.metrics['dice'])} · "
        f"**CNR** {_fmt(view.metrics['cnr'], 2)} · **Pointing game** {hit}  \n"
        f"for '{escape_markdown(prompt)}' at threshold {threshold:g}, against {len(scored)} box(es) {which}."
    )
    return view


# ------------------------------------------------------------------------------------------------ ground truth
def set_boxes_text(session: Session, text: str | None) -> Status:
    """Typed ground truth (lines ``x, y, w, h[, label]``); an empty text clears it."""
    if session.image is None:
        return _no_image(session, "Load an image before adding ground truth.")
    try:
        boxes = parse_boxes_text(text)
        clipped = check_boxes(boxes, session.image.shape[:2]) if boxes else []
    except ValueError as error:
        return Status(f"Ground truth not changed: {error}", error=True)
    session.boxes = clipped
    note = _clip_note(boxes, clipped, session.image.shape[:2])
    return Status(f"{len(boxes)} ground-truth box(es) set.{note}" if boxes else "Ground truth cleared.")


def _clip_note(boxes: list[Box], clipped: list[Box], shape) -> str:
    changed = sum(a[:4] != b[:4] for a, b in zip(boxes, clipped, strict=True))
    return f" {changed} box(es) clipped to the {shape[1]}x{shape[0]} image." if changed else ""


def load_annotations(session: Session, source) -> tuple[str | None, Status]:
    """Ground truth from an uploaded annotation file; returns the boxes as text for the box editor."""
    if session.image is None:
        return None, _no_image(session, "Load an image before adding ground truth.")
    try:
        data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
        boxes = read_annotations(data, session.image_name, session.image.shape[:2])
    except (OSError, ValueError, RecursionError, OverflowError) as error:
        detail = str(error) if isinstance(error, (OSError, ValueError)) else "nested too deeply or numbers too large"
        return None, Status(f"Could not use the annotation file: {detail}", error=True)
    session.boxes = boxes
    return boxes_to_text(boxes), Status(f"{len(boxes)} ground-truth box(es) read for {session.image_name}.")
