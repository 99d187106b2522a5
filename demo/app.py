"""The Gradio UI, top-down: the layout (:mod:`demo.layout`), the handlers (:mod:`demo.handlers`) and the wiring
(:func:`wire`); :func:`build_demo` puts them together. All logic lives in :mod:`demo.callbacks`.

The process environment is set by the launcher (``app.py``: ``GRADIO_ANALYTICS_ENABLED=False`` before gradio is
imported, so the demo runs offline), never here.

Per-user data lives only in a ``gr.State`` holding a :class:`demo.session.Session`; loaded models are shared
through a :class:`demo.models.ModelStore` (immutable, thread-safe predictors). Events with an ``api_name`` are
the client API: ``load_image``, ``load_example``, ``localize``, ``redraw``, ``set_boxes``,
``load_annotations``, ``export``, ``select_model``, ``refresh_models``, ``set_modality``.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from . import callbacks as cb
from . import modality as md
from .decoding import DecodeWorker
from .handlers import Handlers, example_samples
from .layout import UI, layout
from .models import EXAMPLES_DIR, LoadedModel, ModelStore
from .server import IDLE_RELEASE_S, Sessions

MEMORY_BUDGET_BYTES = 2 << 30
SWEEP_INTERVAL_S = 60.0


SCROLL_TO_RESULT = """() => {
    const result = document.getElementById('afloc-result'), figure = document.getElementById('afloc-figure');
    if (!result || !figure) return;
    const box = figure.getBoundingClientRect();
    if (box.top < 0 || box.bottom > window.innerHeight) result.scrollIntoView({block: 'start'});
}"""
"""After Localize the result (status, notice, overlay) is brought to the top of the view when the overlay is not
fully visible (on a narrow screen it sits below the inputs); a page that shows it already does not move, so the
warnings at its top stay in view."""


ACCESSIBILITY = """() => {
    const status = document.getElementById('afloc-result');
    if (status) { status.setAttribute('role', 'status'); status.setAttribute('aria-live', 'polite'); }
    const describe = () => {
        const image = document.querySelector('#afloc-figure img'), summary = document.getElementById('afloc-summary');
        if (!image) return;
        const text = summary && summary.textContent.trim() ? summary.textContent.trim()
            : 'The uploaded image, not localized yet.';
        if (image.alt !== text) image.alt = text;
    };
    const showError = () => {
        if (!status || !status.textContent.includes('⚠')) return;
        const box = status.getBoundingClientRect();
        if (box.top < 0 || box.bottom > window.innerHeight) status.scrollIntoView({block: 'start'});
    };
    new MutationObserver(describe).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                          attributeFilter: ['src']});
    if (status) new MutationObserver(showError).observe(status, {subtree: true, childList: true, characterData: true});
    document.addEventListener('keydown', (event) => {
        if (event.key !== 'Enter' && event.key !== ' ') return;
        const zone = event.target.closest ? event.target.closest('#afloc-upload .upload-container') : null;
        const input = zone ? document.querySelector('#afloc-upload input[type=file]') : null;
        if (input) { event.preventDefault(); input.click(); }
    }, true);
}"""
"""Run once when the page loads: the status is a polite live region (a screen reader announces each new message)
and is scrolled into view when it shows an error off-screen (an error is shown there only, once); the picture's
text alternative is the one-line description of its heatmap (kept in step by an observer); and Enter
or Space on the focused upload area opens the file chooser (Gradio's area reacts to clicks only)."""


def wire(ui: UI, on: Handlers, blocks: gr.Blocks) -> None:
    """Connect the components' events to the handlers (the status output stays last: clients read ``[-1]``)."""
    result = [ui.figure, ui.key, ui.shown, ui.metrics, ui.score_label, ui.probabilities, ui.zero_shot_notes]
    result += [ui.notice]  # what a new film, a cleared upload or a new model resets (``Handlers.cleared``)
    everything = [ui.state, ui.modality, ui.presets, ui.prompt_box, ui.boxes, ui.invert, *result, ui.status]
    switched = [ui.model, ui.banner, ui.example_list]  # what a change of modality also updates
    view = [ui.state, ui.shown, ui.threshold, ui.opacity, ui.window]  # what a redraw reads
    redrawn = [ui.state, ui.figure, ui.key, ui.metrics, ui.score_label, ui.notice, ui.status]
    localize_inputs = [ui.state, ui.model, ui.prompt_box, ui.presets, ui.shown, ui.threshold, ui.opacity, ui.window]
    localize_outputs = [ui.state, *result, ui.status]

    ui.upload.upload(
        on.on_upload, [ui.state, ui.upload, ui.model], [*everything[:-1], *switched, ui.status], api_name="load_image"
    )
    ui.upload.clear(on.on_clear, [ui.state], everything, api_name="clear_image")
    ui.presets.input(on.on_presets, [ui.prompt_box, ui.presets], [ui.prompt_box, ui.presets], api_visibility="private")
    ui.example_list.click(
        on.on_example, [ui.state, ui.example_list, ui.modality], everything, api_name="load_example"
    ).success(on.on_localize, localize_inputs, localize_outputs, api_visibility="private").then(
        None, None, None, js=SCROLL_TO_RESULT
    )
    ui.run.click(on.on_localize, localize_inputs, localize_outputs, api_name="localize").then(
        None, None, None, js=SCROLL_TO_RESULT
    )
    ui.shown.input(on.on_redraw, view, redrawn, api_name="redraw", show_progress="hidden")
    for control in (ui.threshold, ui.opacity, ui.window):
        control.change(
            on.on_redraw, view, redrawn, api_visibility="private", trigger_mode="always_last", show_progress="hidden"
        )
    ui.invert.input(on.on_invert, [ui.state, ui.invert, ui.window], [ui.invert, *result, ui.state, ui.status],
                    api_name="invert")  # fmt: skip
    ui.score_label.input(on.on_score_label, [ui.state, ui.score_label, *view[1:]], redrawn, api_name="score_against")
    ui.apply_boxes.click(on.on_boxes, [ui.state, ui.boxes, *view[1:]], redrawn, api_name="set_boxes")
    ui.annotations.upload(
        on.on_annotations, [ui.state, ui.annotations, *view[1:]], redrawn + [ui.boxes], api_name="load_annotations"
    )
    ui.class_names.input(
        on.on_class_names, [ui.state, ui.class_names, *view[1:]], redrawn + [ui.boxes], api_name="class_names"
    )
    ui.export_button.click(on.on_export, view, [ui.state, ui.downloads, ui.status], api_name="export")
    ui.model.change(
        on.on_model,
        [ui.state, ui.model],
        [ui.state, *result, ui.status, ui.card, ui.card_summary, ui.banner],
        api_name="select_model",
    )
    ui.refresh.click(on.on_refresh, [ui.model, ui.modality], [ui.model], api_name="refresh_models")
    ui.modality.input(
        on.on_modality, [ui.state, ui.modality, ui.model], [ui.state, ui.presets, *switched], api_name="set_modality"
    )
    blocks.load(None, None, None, js=ACCESSIBILITY)
    blocks.unload(on.on_unload)


def build_demo(
    predictor=None,
    *,
    store: ModelStore | None = None,
    default_model: str | None = None,
    examples_dir: str | Path = EXAMPLES_DIR,
    max_pixels: int = cb.MAX_PIXELS,
    concurrency_limit: int = 4,
    queue_size: int = 64,
    memory_budget_bytes: int = MEMORY_BUDGET_BYTES,
    sweep_interval_s: float = SWEEP_INTERVAL_S,
    idle_release_s: float = IDLE_RELEASE_S,
    decode: DecodeWorker | None = None,
) -> gr.Blocks:
    """Build the demo (nothing is loaded or launched here; models load on first use).

    Args:
        predictor: an :class:`afloc.AFLocPredictor` to offer as the model "custom predictor" (and default).
        store: where models are found; default the bundled ``assets/models/`` and the user models folder.
        default_model: the dropdown's initial key (a model directory path); default the store's
            :meth:`~demo.models.ModelStore.default_key` (the first bundled chest X-ray model).
        examples_dir: folder of example images + ground-truth JSON.
        max_pixels: largest image accepted (width x height), checked before decoding.
        concurrency_limit, queue_size: per-event worker count and waiting-queue length.
        memory_budget_bytes: all sessions' images and heatmaps together; over it, the least recently used
            sessions give up their arrays (their users are asked to load the image again).
        sweep_interval_s: uploads that no event consumed are deleted on this timer too, not only on the next
            upload (a client can post files to Gradio's upload route without ever running an event).
        idle_release_s: a session unused this long gives up its image and heatmaps (its user is asked to load the
            image again): the expiry of clients that never open Gradio's heartbeat, which never end their session.
        decode: how uploads are decoded; default a :class:`demo.decoding.DecodeWorker` with its default limits
            (a child process per upload: wall-clock, CPU-time and memory limits).
    """
    if store is None:
        from .models import BUNDLED_MODELS_DIR, default_user_models_dir

        store = ModelStore([BUNDLED_MODELS_DIR, default_user_models_dir()])
    if predictor is not None:
        store.preloaded["custom"] = LoadedModel("custom", "custom predictor", predictor, "")
        default_model = default_model or "custom"
    default_model = default_model or store.default_key()
    # The modality switch selects the models, presets and examples; start on the default model's modality.
    start_modality = md.model_modality(store, default_model) or "cxr"
    default_model = md.default_model(store, start_modality, default_model)
    examples = cb.list_examples(Path(examples_dir))
    # inside Gradio's cache folder, so that Gradio serves the sessions' files in place (no second copy)
    sessions = Sessions(Path(get_upload_folder()), memory_budget_bytes, sweep_interval_s, idle_release_s)
    if decode is None:
        decode = DecodeWorker()
        decode.start()

    with gr.Blocks(title="AFLoc demo", analytics_enabled=False, delete_cache=(300, 1800)) as demo:
        ui = layout(store, start_modality, default_model, example_samples(examples, start_modality))
        wire(ui, Handlers(ui, store, sessions, examples, max_pixels, decode, demo), demo)
    demo.afloc_stop_sweeping = sessions.stop_sweeping
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=queue_size)
    return demo
