"""What the demo tells its user in words: plain messages for files it cannot read, the notice beside a heatmap
(an image unlike the model's training images, a finding the model never saw, a negated prompt) and the notes under
the zero-shot panel (no gradio import).
"""

from __future__ import annotations

import re

from .session import Session, escape_markdown

_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive or an Office document"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a WebP image or another RIFF file"),
    (b"\x1f\x8b", "a gzip archive"),
)

_TOO_LARGE = re.compile(r"(\d+)x(\d+) = \d+ pixels exceeds")


def read_head(source) -> bytes:
    try:
        if isinstance(source, (bytes, bytearray)):
            return bytes(source[:512])
        with open(source, "rb") as handle:
            return handle.read(512)
    except (OSError, TypeError):
        return b""


def plain_message(error: str, head: bytes, name: str, max_pixels: int) -> str:
    """The reader's error in words a clinician can act on: what the file is and what to do instead."""
    what = next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)
    if what is None and head and "not a recognised image" in error:
        try:
            head.decode("utf-8")
            what = "a text file"
        except UnicodeDecodeError:
            what = None
    if what is not None:
        return f"{name} is {what}, not an image: export the film as PNG, JPEG or DICOM and upload that file."
    match = _TOO_LARGE.search(error)
    if match:
        width, height = int(match.group(1)), int(match.group(2))
        side = int(max(width, height) * (max_pixels / (width * height)) ** 0.5) // 100 * 100  # same aspect
        return (
            f"{name} is {width} x {height} ({width * height / 1e6:.0f} MP), over the {max_pixels / 1e6:.0f} MP limit: "
            f"downscale it to at most {side} px on its longer side and upload it again."
        )
    if "not a recognised image" in error:
        return f"{name} is not an image this demo reads: upload a PNG, JPEG or DICOM file."
    return f"Could not read {name}: {error}"


def dicom_text(info) -> str:
    """What the status says of a DICOM's display: its photometric interpretation and the window that was used."""
    if getattr(info, "format", "") != "dicom":
        return ""
    photometric = info.photometric_interpretation or "no photometric interpretation"
    shown = {
        "MONOCHROME1": "MONOCHROME1 (stored with white as the minimum: inverted so that air is dark)",
        "MONOCHROME2": "MONOCHROME2 (air dark, as stored)",
    }.get(photometric, photometric)
    window = {
        "lut": "the file's VOI LUT",
        "window": "the file's window centre/width",
    }.get(info.voi_transform or "", "the full range of the stored values (the file has no window)")
    return (
        f" {shown}; shown with {window}. If the film looks like a negative, tick Invert (the model then sees the "
        "inverted film too)."
    )


OUT_OF_DISTRIBUTION = (
    "⚠️ **This image is unlike the images this model was trained on; its heatmap and scores are not meaningful.**"
)

NEGATION = re.compile(r"^\s*(no|not|without|absence of|absent|negative for|free of|resolved)\b", re.IGNORECASE)


def notice_text(session: Session, prompt: str | None) -> str:
    """What the user must know before reading the heatmap of ``prompt``: the image is out of distribution, or the
    prompt names a finding the model's training reports never named."""
    lines = []
    if session.encoded is not None and session.encoded.out_of_distribution:
        lines.append(OUT_OF_DISTRIBUTION)
    unseen = session.unseen.get(prompt or "", [])
    if unseen:
        names = escape_markdown(", ".join(unseen))
        lines.append(f"⚠️ This model was not trained on reports of {names}: its heatmap for this prompt means nothing.")
    if prompt and NEGATION.match(prompt):
        lines.append(
            "⚠️ This prompt is negated: the model matches the words of a finding, not its absence, so the map of "
            f"'{escape_markdown(prompt)}' looks like the map of the finding itself."
        )
    return "\n\n".join(lines)


def zero_shot_text(session: Session) -> str:
    """The zero-shot findings the probability panel leaves out: uncalibrated scores (not probabilities) and
    findings the model was never trained on."""
    uncalibrated = [r for r in session.zero_shot.values() if r.probability is None]
    lines = []
    if session.zero_shot and len(uncalibrated) == len(session.zero_shot):
        lines.append("This model has no calibration: its zero-shot scores are not probabilities.")
    if uncalibrated:
        scores = ", ".join(f"{escape_markdown(r.finding)} {r.uncalibrated:.2f}" for r in uncalibrated)
        lines.append(f"Uncalibrated scores (not probabilities): {scores}.")
    unseen = [r.finding for r in session.zero_shot.values() if r.seen_in_training is False]
    if unseen:
        lines.append(f"Not trained on reports of: {escape_markdown(', '.join(unseen))}.")
    return "  \n".join(lines)
