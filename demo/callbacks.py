"""The demo's logic as plain functions over a per-session :class:`Session` (no gradio import).

Each UI event maps to one function here; ``demo/app.py`` only wires components to them, so tests call these
directly. Bad input never raises: functions return a :class:`Status` with a readable message instead.
Coordinates: boxes are ``[x, y, w, h]`` in original image pixels (COCO convention, origin at the top-left
corner of the top-left pixel); heatmaps are ``[H, W]`` on the original pixels in ``[-1, 1]``, NaN undefined.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from afloc.imaging.boxes import Box
from afloc.imaging.io import load_image_with_info
from afloc.localization.overlay import to_rgb_uint8
from afloc.predictor import MAX_PROMPT_CHARS
from afloc.text.prompts import FINDINGS_BY_MODALITY
from afloc.text.tokenizer import split_sentences

from .annotations import (
    KNOWN_CLASS_NAMES,
    NAMES_FILE,
    boxes_to_text,
    check_boxes,
    example_boxes,
    name_classes,
    parse_boxes_text,
    read_annotations,
    read_class_names,
)
from .messages import dicom_text, plain_message, read_head
from .session import Session
from .view import DEFAULT_OPACITY, DEFAULT_THRESHOLD, View, display_image, render  # noqa: F401 (the demo's API)

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
    session.image, session.image_name, session.released, session.inverted = image, name, False, False
    session.modality = "fundus" if image.ndim == 3 else "cxr"
    session.set_encoded(None)
    session.model_key = None
    session.set_boxes([])
    kind = "colour, fundus presets" if image.ndim == 3 else "greyscale, chest X-ray presets"
    text = f"Loaded {name}: {info.format.upper()}, {info.width}x{info.height} ({kind}).{dicom_text(info)}"
    return to_rgb_uint8(image), Status(text)


def clear_image(session: Session) -> None:
    """Forget the film, its encoding, heatmaps and ground truth (a new upload attempt, or the upload cleared)."""
    session.image, session.image_name, session.inverted = None, "", False
    session.set_encoded(None)
    session.model_key = None
    session.set_boxes([])


def set_inverted(session: Session, inverted: bool, window: str | None = None) -> tuple[np.ndarray | None, Status]:
    """Invert a greyscale film (white <-> black) for display *and* for the model, which must see air dark as in
    its training films: for a film that shows as a negative (e.g. a mislabelled MONOCHROME1/2 DICOM)."""
    if session.image is None:
        return None, _no_image(session, "Load an image before inverting it.")
    if session.image.ndim != 2:
        return None, Status("Only a greyscale film can be inverted; this is a colour photo.", error=True)
    inverted = bool(inverted)
    if inverted != session.inverted:
        grey = session.image.astype(np.float32)
        session.image = (grey.max() + grey.min()) - grey if session.image.dtype.kind == "f" else 255 - session.image
        session.inverted = inverted
        session.set_encoded(None)
        session.model_key = None
    state = "inverted (the model sees the inverted film)" if inverted else "as decoded"
    return to_rgb_uint8(display_image(session.image, window)), Status(f"Film shown {state}. Press Localize.")


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
        session.set_boxes(example.boxes)
        session.modality = example.modality
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
    named = ", ".join(p if len(p) <= 60 else p[:57] + "..." for p in prompts)
    return Status(f"Localized {len(prompts)} prompt(s) with {model.name}: {named}.{note}")


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
    session.set_boxes(clipped)
    note = _clip_note(boxes, clipped, session.image.shape[:2])
    return Status(f"{len(boxes)} ground-truth box(es) set.{note}" if boxes else "Ground truth cleared.")


def _clip_note(boxes: list[Box], clipped: list[Box], shape) -> str:
    changed = sum(a[:4] != b[:4] for a, b in zip(boxes, clipped, strict=True))
    return f" {changed} box(es) clipped to the {shape[1]}x{shape[0]} image." if changed else ""


def load_annotations(session: Session, sources) -> tuple[str | None, Status]:
    """Ground truth from uploaded annotation files (one box file, with or without a YOLO names file such as
    ``retinal.names`` or ``classes.txt``); returns the boxes as text for the box editor (None: unchanged)."""
    if session.image is None:
        return None, _no_image(session, "Load an image before adding ground truth.")
    sources = [sources] if isinstance(sources, (str, Path, bytes, bytearray)) else list(sources or [])
    try:
        files = [Path(s).read_bytes() if isinstance(s, (str, Path)) else bytes(s) for s in sources]
        texts = [f.decode("utf-8-sig", errors="strict") if len(f) <= 100_000 else None for f in files]
    except UnicodeDecodeError:
        texts = [None] * len(files)
    except OSError as error:
        return None, Status(f"Could not use the annotation file: {error}", error=True)
    # a names file is known by its name (retinal.names, classes.txt) or by being uploaded beside a box file
    named = [Path(str(s)).name if isinstance(s, (str, Path)) else "" for s in sources]
    names_at = [
        k
        for k, t in enumerate(texts)
        if t is not None and read_class_names(t) is not None and (NAMES_FILE.search(named[k]) or len(files) > 1)
    ]
    boxes_at = [k for k in range(len(files)) if k not in names_at]
    if len(boxes_at) > 1 or len(names_at) > 1:
        return None, Status("Upload one box file (and at most one class-names file) at a time.", error=True)
    note = ""
    if names_at:
        names = read_class_names(texts[names_at[0]])
        note = " " + set_class_names_list(session, names)
    if not boxes_at:
        return boxes_to_text(session.boxes), Status(note.strip() or "No boxes in the file.")
    try:
        boxes = read_annotations(files[boxes_at[0]], session.image_name, session.image.shape[:2], session.yolo_names)
    except (ValueError, RecursionError, OverflowError) as error:
        detail = str(error) if isinstance(error, ValueError) else "nested too deeply or numbers too large"
        return None, Status(f"Could not use the annotation file: {detail}", error=True)
    session.set_boxes(boxes)
    unnamed = any(b.label.startswith("class ") for b in boxes)
    hint = " The YOLO classes have no names: upload the names file or choose the dataset's names." if unnamed else ""
    return boxes_to_text(boxes), Status(f"{len(boxes)} ground-truth box(es) read for {session.image_name}.{note}{hint}")


def set_class_names_list(session: Session, names: list[str]) -> str:
    """Name the YOLO classes (the session's boxes are relabelled); returns what was done, in words."""
    previous, session.yolo_names = session.yolo_names, list(names)
    session.set_boxes(name_classes(session.boxes, session.yolo_names, previous))
    return (
        f"YOLO class names: {', '.join(f'{k} {n}' for k, n in enumerate(names[:6]))}{'...' if len(names) > 6 else ''}."
    )


def set_known_class_names(session: Session, dataset: str | None) -> tuple[str | None, Status]:
    """Name the YOLO classes with a known dataset's names (:data:`KNOWN_CLASS_NAMES`); returns the boxes as text."""
    if dataset not in KNOWN_CLASS_NAMES:
        return None, Status("Choose one of the listed datasets' class names.", error=True)
    message = set_class_names_list(session, KNOWN_CLASS_NAMES[dataset][1])
    return boxes_to_text(session.boxes), Status(message)


def choose_label(session: Session, prompt: str | None, label: str | None) -> Status:
    """Score ``prompt`` against the boxes of category ``label`` (None or "": by matching labels again)."""
    if not prompt or prompt not in session.prompts:
        return Status("Localize a prompt before choosing the boxes to score it against.", error=True)
    if label and label not in session.box_labels():
        return Status(f"There is no ground-truth box labelled {label!r}.", error=True)
    if label:
        session.chosen_labels[prompt] = label
        return Status(f"'{prompt}' is scored against the boxes labelled '{label}' (your choice).")
    session.chosen_labels.pop(prompt, None)
    return Status(f"'{prompt}' is scored against the boxes labelled like it.")
