"""The demo page's components and where they sit (no behaviour: :mod:`demo.handlers` and :func:`demo.app.wire`)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from . import modality as md
from .annotations import KNOWN_CLASS_NAMES
from .models import ModelStore
from .view import DEFAULT_OPACITY, DEFAULT_THRESHOLD, WINDOW_LABELS

SESSION_TTL_S = 4 * 3600  # an idle session's image, heatmaps and exports are dropped after this
HEADER = (
    "# AFLoc: where is the finding?\n"
    "Upload a chest X-ray (PNG, JPEG or DICOM) or a fundus photo, type findings, and see where the model "
    "matches them. **Research use only. Not a medical device**: not validated for diagnosis, triage or any "
    "clinical decision; a heatmap shows where image features match the text, not proof of disease."
)
BOXES_HELP = (
    "One box per line: x, y, w, h[, label] in original pixels (label: 'category: phrase', either part optional). "
    "Metrics use the boxes whose label matches the prompt (CamelCase and underscores split); unlabelled boxes are all "
    "used; a prompt that matches no label gets no metrics until you choose a label under 'Score against'."
)
AUTOMATIC_LABEL = "labelled like the prompt"


class CloseSession:
    """The state's expiry callback: closes the session (frees its arrays, deletes its folder). A class with a fixed
    repr, because Gradio writes the callback's repr into the page config (a function's would carry its address)."""

    def __call__(self, session) -> None:
        if session is not None:
            session.close()

    def __repr__(self) -> str:
        return "close-session"


@dataclass
class UI:
    """The page's components, by role."""

    state: gr.State
    banner: gr.Markdown
    model: gr.Dropdown
    refresh: gr.Button
    card_summary: gr.Markdown
    card: gr.Markdown
    upload: gr.File
    example_list: gr.Dataset
    modality: gr.Radio
    presets: gr.Dropdown
    prompt_box: gr.Textbox
    run: gr.Button
    status: gr.Markdown
    notice: gr.Markdown
    figure: gr.Image
    key: gr.HTML
    shown: gr.Dropdown
    threshold: gr.Slider
    opacity: gr.Slider
    invert: gr.Checkbox
    window: gr.Dropdown
    metrics: gr.Markdown
    score_label: gr.Dropdown
    probabilities: gr.Label
    zero_shot_notes: gr.Markdown
    annotations: gr.File
    class_names: gr.Dropdown
    boxes: gr.Textbox
    apply_boxes: gr.Button
    export_button: gr.Button
    downloads: gr.File


def layout(store: ModelStore, modality: str, model_key: str | None, samples: list[list[str]]) -> UI:
    """The components, inside the current ``gr.Blocks``, in the order of the task: on the left the image, its
    modality, the findings and Localize (then the examples, the model, ground truth and export); on the right the
    result: status, notice, the one picture (the film, then its overlay) and its controls, in view after Localize."""
    state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=CloseSession())
    gr.Markdown(HEADER)
    banner = gr.Markdown(md.banner(store, modality, model_key), label="warnings")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            upload = gr.File(
                label="Image: PNG, JPEG or DICOM (recognised by content)", type="filepath", height=120,
                elem_id="afloc-upload",
            )  # fmt: skip
            modality_radio = gr.Radio([(md.LABELS[m], m) for m in md.MODALITIES], value=modality, label="Modality")
            prompt_box = gr.Textbox(
                label="Findings to localize (comma- or newline-separated)",
                placeholder="e.g. left lower lobe consolidation, small right pleural effusion",
                lines=2,
                elem_id="afloc-findings",
            )
            presets = gr.Dropdown(
                md.presets(modality), value=[], multiselect=True, label="Finding presets (added to the findings box)",
                elem_id="afloc-presets",
            )  # fmt: skip
            run = gr.Button("Localize", variant="primary")
            example_list = gr.Dataset(
                label="Examples with ground truth (of the chosen modality)",
                components=["textbox", "textbox"],
                headers=["example", "suggested prompt"],
                samples=samples,
                type="index",
                layout="table",
            )
            with gr.Row():
                model = gr.Dropdown(md.model_choices(store, modality), value=model_key, label="Model", scale=4)
                refresh = gr.Button("↻ Refresh models", scale=1, size="sm")
            card_summary = gr.Markdown(store.card_summary(model_key), label="model summary")
            with gr.Accordion("Model card: details", open=False):
                card = gr.Markdown(store.card(model_key), label="model card")
            with gr.Accordion("Ground truth", open=False):
                annotations = gr.File(
                    label="Annotation file: COCO JSON, MS-CXR CSV, CSV x,y,w,h,label, or YOLO txt (+ its names file)",
                    file_count="multiple",
                    elem_id="afloc-annotations",
                )
                class_names = gr.Dropdown(
                    [(label, key) for key, (label, _) in KNOWN_CLASS_NAMES.items()], value=None,
                    label="YOLO class names, when no names file is uploaded",
                )  # fmt: skip
                boxes = gr.Textbox(label="Boxes", info=BOXES_HELP, lines=3, elem_id="afloc-boxes")
                apply_boxes = gr.Button("Apply boxes")
            export_button = gr.Button("Export PNG + heatmap (.npy) + JSON")
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="afloc-downloads")
        with gr.Column(scale=3, min_width=320):
            status = gr.Markdown(label="status", elem_id="afloc-result")
            notice = gr.Markdown(label="notice")
            figure = gr.Image(
                label="Image and heatmap (blue: low, red: high similarity)",
                interactive=False,
                format="png",
                buttons=["download", "fullscreen"],
                elem_id="afloc-figure",
            )
            key = gr.HTML("", elem_id="afloc-key")
            shown = gr.Dropdown([], label="Show prompt", allow_custom_value=True)
            with gr.Row():
                threshold = gr.Slider(
                    -1, 1, value=DEFAULT_THRESHOLD, step=0.01, label="Threshold (contour of heatmap > t)"
                )
                opacity = gr.Slider(0, 1, value=DEFAULT_OPACITY, step=0.05, label="Heatmap opacity")
            with gr.Row():
                window = gr.Dropdown(
                    [(label, name) for name, label in WINDOW_LABELS.items()], value="file",
                    label="Display window (display only: the model sees the file's window)",
                )  # fmt: skip
                invert = gr.Checkbox(False, label="Invert film (the model sees the inverted film too)")
            metrics = gr.Markdown(label="metrics")
            score_label = gr.Dropdown(
                [(AUTOMATIC_LABEL, "")], value="", label="Score against (ground-truth boxes of this label)"
            )
            probabilities = gr.Label(
                label="Zero-shot probability of standard findings (calibrated on validation images)", num_top_classes=9
            )
            zero_shot_notes = gr.Markdown(label="zero-shot notes")
    return UI(
        state, banner, model, refresh, card_summary, card, upload, example_list, modality_radio, presets, prompt_box,
        run, status, notice, figure, key, shown, threshold, opacity, invert, window, metrics, score_label,
        probabilities, zero_shot_notes, annotations, class_names, boxes, apply_boxes, export_button, downloads,
    )  # fmt: skip
