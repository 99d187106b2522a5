"""What the result panel shows for one prompt (no gradio import): the overlay, the key beside it (colour bar and
legend as page text, readable on a phone), a one-line description of the heatmap (the image's text alternative),
and the metrics against the ground truth with a reference value for each: the centre prior on the same image.
"""

from __future__ import annotations

import functools
import html
import math
from dataclasses import dataclass, field

import numpy as np

from afloc.imaging.boxes import Box, boxes_to_mask
from afloc.localization.metrics import THRESHOLDS, localization_metrics, threshold_metrics
from afloc.localization.overlay import (
    BOX_COLOR,
    CONTOUR_COLOR,
    add_colorbar,
    add_legend,
    colorize,
    render_overlay,
)
from afloc.text.tokenizer import normalize_prompt

from .annotations import boxes_for_prompt, category
from .messages import notice_text
from .session import Session, escape_markdown

DEFAULT_THRESHOLD = 0.3
"""Where the demo's threshold slider starts: the contour of heatmap > t and the IoU/Dice threshold."""
DEFAULT_OPACITY = 0.5
DISPLAY_WINDOWS = {
    "file": None,
    "lung": (1.0, 60.0),
    "mediastinum": (30.0, 95.0),
    "bone": (50.0, 99.5),
}
"""Display windows for a greyscale film, as percentiles of its own grey levels (a projection radiograph has no
Hounsfield units): ``file`` shows the file's own window. They change the display only, never the model's input."""
WINDOW_LABELS = {
    "file": "File's window",
    "lung": "Lung (dark range stretched)",
    "mediastinum": "Mediastinum (middle range)",
    "bone": "Bone (bright range)",
}


@dataclass
class View:
    """What the output panel shows for one prompt: ``overlay`` on screen, ``figure`` (overlay + colour bar +
    legend, drawn when first asked for: exports) , ``key`` (colour bar and legend as HTML) and ``summary`` (the
    text alternative)."""

    prompt: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    opacity: float = DEFAULT_OPACITY
    overlay: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    metrics: dict[str, float] | None = None
    reference: dict[str, float] | None = None  # the centre prior's metrics on the same image and boxes
    metrics_text: str = ""
    notice: str = ""
    summary: str = ""
    key: str = ""
    scored_boxes: list[Box] = field(default_factory=list)
    matched_by: str | None = None  # "label", "chosen label", "all boxes (unlabelled)" or None (nothing scored)

    legend: list = field(default_factory=list, repr=False)
    _figure: np.ndarray | None = field(default=None, repr=False)

    @property
    def boxes_matched(self) -> bool:
        return self.matched_by in ("label", "chosen label")

    @property
    def figure(self) -> np.ndarray | None:
        """The overlay with its colour bar and legend drawn in (an export's picture); None without a result."""
        if self._figure is None and self.overlay is not None:
            self._figure = add_legend(add_colorbar(self.overlay, threshold=self.threshold), self.legend)
        return self._figure


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _clamped(value, low: float, high: float, default: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return min(max(value, low), high) if math.isfinite(value) else default


def display_image(image: np.ndarray, window: str | None) -> np.ndarray:
    """The film as shown: a greyscale image stretched to one of :data:`DISPLAY_WINDOWS` (colour images and the
    file's window are returned unchanged)."""
    bounds = DISPLAY_WINDOWS.get(window or "file")
    if bounds is None or image.ndim != 2:
        return image
    grey = image.astype(np.float32)
    low, high = np.percentile(grey[:: max(1, grey.shape[0] // 256), :: max(1, grey.shape[1] // 256)], bounds)
    if high <= low:
        return image
    return np.clip((grey - low) / (high - low), 0.0, 1.0)


_ROWS, _COLUMNS = ("upper", "middle", "lower"), ("left", "centre", "right")


def heatmap_summary(heatmap: np.ndarray, prompt: str, threshold: float, modality: str, boxes: list[Box]) -> str:
    """One line saying what the heatmap shows, for a reader who cannot see it: where it peaks (thirds of the image;
    on a chest film also the patient's side), how much of the image lies above the threshold, and whether the
    peak falls in a ground-truth box."""
    valid = ~np.isnan(heatmap)
    if not valid.any():
        return f"No heatmap for '{prompt}': no pixel has a value."
    row, col = np.unravel_index(int(np.nanargmax(heatmap)), heatmap.shape)
    height, width = heatmap.shape
    zone_row, zone_col = _ROWS[min(2, 3 * row // height)], _COLUMNS[min(2, 3 * col // width)]
    where = "the image's centre" if (zone_row, zone_col) == ("middle", "centre") else f"the image's {zone_row} "
    where += "" if (zone_row, zone_col) == ("middle", "centre") else zone_col
    if modality == "cxr" and zone_col != "centre":
        where += f" (the patient's {'right' if zone_col == 'left' else 'left'} on a frontal film)"
    above = float(np.count_nonzero(heatmap[valid] > threshold)) / np.count_nonzero(valid)
    text = f"Heatmap of '{prompt}': highest at {where}; {above:.0%} of the image is above the threshold {threshold:g}."
    if boxes:
        inside = any(b.x <= col + 0.5 <= b.x + b.w and b.y <= row + 0.5 <= b.y + b.h for b in boxes)
        text += (
            f" The peak is {'inside' if inside else 'outside'} the ground-truth box{'es' if len(boxes) > 1 else ''}."
        )
    return text


@functools.cache
def _colour_stops(n: int = 9) -> str:
    """The overlay's colour scale (:func:`afloc.localization.overlay.colorize`, -1 to 1) as CSS gradient stops."""
    colours = np.rint(colorize(np.linspace(-1.0, 1.0, n)[None])[0, :, :3] * 255).astype(int)
    return ", ".join(f"rgb({r},{g},{b}) {100 * k / (n - 1):.0f}%" for k, (r, g, b) in enumerate(colours))


def key_html(view: View) -> str:
    """The heatmap's key as page text (sized by the browser, so legible at any screen width): the description,
    the colour bar with its ticks and the threshold, and the legend of the lines drawn."""
    if view.heatmap is None:
        return '<p id="afloc-summary" hidden></p>'
    rgb = "rgb({},{},{})"
    position = (view.threshold + 1) / 2 * 100
    prompt = html.escape(normalize_prompt(view.prompt or ""))
    ticks = "".join(
        f'<span style="position:absolute;left:{(t + 1) * 50:.0f}%;transform:translateX(-{(t + 1) * 50:.0f}%)">{t:g}'
        f"</span>"
        for t in (-1, -0.5, 0, 0.5, 1)
    )
    swatch = 'aria-hidden="true" style="display:inline-block;box-sizing:content-box;width:28px;vertical-align:middle;'
    contour = f'<span {swatch}height:4px;background:{rgb.format(*CONTOUR_COLOR)};border:3px solid #000"></span>'
    box = f'<span {swatch}height:0;border-top:4px dashed {rgb.format(*BOX_COLOR)};outline:3px solid #000"></span>'
    legend = f"{contour} heatmap of '{prompt}' above {view.threshold:g}"
    if view.scored_boxes:
        legend += f"&emsp;{box} ground truth ({len(view.scored_boxes)} box{'es' if len(view.scored_boxes) > 1 else ''})"
    return (
        '<div class="afloc-key" style="font-size:15px;line-height:1.5">'
        f'<p id="afloc-summary" style="margin:0 0 6px 0">{html.escape(view.summary)}</p>'
        '<div role="img" aria-label="colour scale: blue is low similarity (-1), red is high (+1); the black line marks '
        f'the threshold {view.threshold:g}" style="position:relative;height:18px;border:1px solid #888;'
        f'background:linear-gradient(to right, {_colour_stops()})">'
        f'<span style="position:absolute;left:{position:.1f}%;top:-4px;bottom:-4px;width:3px;background:#000;'
        'outline:1px solid #fff"></span></div>'
        f'<div aria-hidden="true" style="position:relative;height:22px">{ticks}</div>'
        '<div style="display:flex;justify-content:space-between"><span>blue: low similarity</span>'
        "<span>red: high similarity</span></div>"
        f'<p style="margin:6px 0 0 0">{legend}</p></div>'
    )


METRIC_MEANINGS = {
    "pointing_game": "is the heatmap's hottest pixel inside a ground-truth box?",
    "iou": "overlap of the area above the threshold with the boxes (0 none, 1 identical)",
    "iou_mean": "the same, averaged over the thresholds 0.1 to 0.5 (the paper's headline number)",
    "dice": "like IoU, with the overlap counted twice: 2|A∩B| / (|A| + |B|)",
    "cnr": "how much hotter the heatmap is inside the boxes than outside, in units of its spread (>0: hotter inside)",
}


def _scores(session: Session, prompt: str, boxes: list[Box], heatmap: np.ndarray, threshold: float):
    """The metrics of the heatmap and of the centre prior against ``boxes``; what does not depend on the threshold
    (the mask, both maps' mean IoU over 0.1-0.5) is kept for the next threshold move."""

    def fixed():
        mask = boxes_to_mask(boxes, *heatmap.shape)
        means = [threshold_metrics(m, mask, THRESHOLDS)["iou_mean"] for m in (heatmap, session.centre_prior())]
        return mask, means

    key = (prompt, tuple(boxes), heatmap.shape, id(session.encoded))
    mask, means = session.memo(key, fixed)
    model = localization_metrics(heatmap, mask, threshold) | {"iou_mean": means[0]}
    prior = localization_metrics(session.centre_prior(), mask, threshold) | {"iou_mean": means[1]}
    return model, prior


def metrics_text(view: View) -> str:
    """One line per metric: its value, the centre prior's on this image, and what it means."""
    hit = {1.0: "hit", 0.0: "miss"}

    def value(scores, name):
        if name == "pointing_game":
            return hit.get(scores[name], "n/a")
        return _fmt(scores[name], 2 if name == "cnr" else 3)

    names = {"pointing_game": "Pointing game", "iou": f"IoU at {view.threshold:g}", "iou_mean": "Mean IoU 0.1-0.5"}
    names |= {"dice": f"Dice at {view.threshold:g}", "cnr": "CNR"}
    lines = [
        f"**{label}** {value(view.metrics, name)} (centre prior: {value(view.reference, name)}): "
        f"{METRIC_MEANINGS[name]}"
        for name, label in names.items()
    ]
    which = {"label": "labelled like the prompt", "chosen label": "with the label you chose"}.get(
        view.matched_by or "", "(unlabelled: all boxes)"
    )
    lines.append(
        f"Scored for '{escape_markdown(view.prompt)}' at threshold {view.threshold:g} against "
        f"{len(view.scored_boxes)} box(es) {which}. The centre "
        "prior is a prompt-blind Gaussian on the image's centre: a heatmap that does not beat it has not found "
        "the finding."
    )
    return "  \n".join(lines)


def render(session: Session, selected: str | None, threshold: float, opacity: float, window: str | None = None) -> View:
    """Draw the heatmap of ``selected`` (default: the first prompt) with its contour, boxes and metrics."""
    if not session.has_results:
        return View()
    prompt = selected if selected in session.prompts else session.prompts[0]
    heatmap = session.heatmap(prompt)
    threshold, opacity = _clamped(threshold, -1.0, 1.0, DEFAULT_THRESHOLD), _clamped(opacity, 0.0, 1.0, DEFAULT_OPACITY)
    scored, matched_by = boxes_for_prompt(session.boxes, prompt, session.chosen_labels.get(prompt))
    overlay = render_overlay(
        display_image(session.image, window),
        heatmap,
        opacity=opacity,
        threshold=threshold,
        boxes=[box[:4] for box in scored] or None,
        box_labels=[category(box.label) for box in scored] or None,
    )
    legend_prompt = normalize_prompt(prompt)
    legend_prompt = legend_prompt if len(legend_prompt) <= 60 else legend_prompt[:57] + "..."
    entries = [(f"'{legend_prompt}' > {threshold:g}", CONTOUR_COLOR)] + (
        [("ground truth", BOX_COLOR)] if scored else []
    )
    view = View(prompt, threshold, opacity, overlay, heatmap, scored_boxes=scored, matched_by=matched_by)
    view.legend = entries
    view.notice = notice_text(session, prompt)
    view.summary = heatmap_summary(heatmap, normalize_prompt(prompt), threshold, session.modality, scored)
    view.key = key_html(view)
    if not scored and session.boxes:
        labels = ", ".join(session.box_labels()[:8])
        view.metrics_text = (
            f"No metrics: no ground-truth box is labelled like '{escape_markdown(prompt)}' (labels here: "
            f"{escape_markdown(labels)}). Choose the label to score against under 'Score against', localize one of "
            "those findings, or edit the box labels."
        )
        return view
    if not scored:
        view.metrics_text = "No ground truth: pick an example, upload an annotation file or type boxes to see metrics."
        return view
    view.metrics, view.reference = _scores(session, prompt, scored, heatmap, threshold)
    view.metrics_text = metrics_text(view)
    return view
