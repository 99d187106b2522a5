"""The Gradio UI: components and their wiring to :mod:`demo.callbacks` (all logic lives there).

The process environment is set by the launcher (``app.py``: ``GRADIO_ANALYTICS_ENABLED=False`` before gradio is
imported, so the demo runs offline), never here.

Per-user data lives only in a ``gr.State`` holding a :class:`demo.callbacks.Session`; loaded models are shared
through a :class:`demo.models.ModelStore` (immutable, thread-safe predictors). Events with an ``api_name`` are
the client API: ``load_image``, ``load_example``, ``localize``, ``redraw``, ``set_boxes``,
``load_annotations``, ``export``, ``select_model``, ``refresh_models``, ``set_modality``.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
import time
import traceback
import uuid
import weakref
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from afloc.text.prompts import FINDINGS_BY_MODALITY

from . import callbacks as cb
from . import modality as md
from .models import EXAMPLES_DIR, LoadedModel, ModelStore
from .session import (
    ORPHAN_UPLOAD_AGE_S,
    MemoryBudget,
    discard_upload,
    escape_html,
    escape_markdown,
    release_freed_memory,
    sweep_empty_temp_files,
    sweep_orphan_uploads,
)

logger = logging.getLogger(__name__)

MEMORY_BUDGET_BYTES = 2 << 30
SWEEP_INTERVAL_S = 60.0
SESSION_TTL_S = 4 * 3600  # an idle session's image, heatmaps and exports are dropped after this
HEADER = (
    "# AFLoc: where is the finding?\n"
    "Upload a chest X-ray (PNG, JPEG or DICOM) or a fundus photo, type findings, and see where the model "
    "matches them. **Research use only. Not a medical device**: not validated for diagnosis, triage or any "
    "clinical decision; a heatmap shows where image features match the text, not proof of disease."
)
BOXES_HELP = (
    "One box per line: x, y, w, h[, label] in original pixels (label: 'category: phrase', either part optional). "
    "Metrics use the boxes whose label matches the prompt, or all boxes when none does."
)


def _status(status: cb.Status) -> str:
    """Messages quote user text (file names, prompts, labels): escaped for the toast's HTML and the Markdown."""
    if status.error:
        gr.Warning(escape_html(status.message))
        return f"**⚠️ {escape_markdown(status.message)}**"
    return escape_markdown(status.message)


def forget_gradio_session(blocks, session_hash: str | None) -> bool:
    """Drop Gradio's state of a closed session: its ``gr.State`` values and its copy of every component's config.

    Gradio keeps a closed session's ``SessionState`` (an hour for ``gr.State`` values, and the config copies until
    ``state_session_capacity`` newer sessions evict it), so memory grows with the number of sessions served.
    Returns whether anything was dropped; a Gradio without this holder is left alone.
    """
    holder = getattr(blocks, "state_holder", None)
    data, lock = getattr(holder, "session_data", None), getattr(holder, "lock", None)
    if not session_hash or data is None or lock is None:
        return False
    with lock:
        dropped = data.pop(session_hash, None) is not None
        getattr(holder, "time_last_used", {}).pop(session_hash, None)
    return dropped


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
) -> gr.Blocks:
    """Build the demo (nothing is loaded or launched here; models load on first use).

    Args:
        predictor: an :class:`afloc.AFLocPredictor` to offer as the model "custom predictor" (and default).
        store: where models are found; default the bundled ``assets/models/`` and the user models folder.
        default_model: the dropdown's initial key (a model directory path); default the store's first model.
        examples_dir: folder of example images + ground-truth JSON.
        max_pixels: largest image accepted (width x height), checked before decoding.
        concurrency_limit, queue_size: per-event worker count and waiting-queue length.
        memory_budget_bytes: all sessions' images and heatmaps together; over it, the least recently used
            sessions give up their arrays (their users are asked to load the image again).
        sweep_interval_s: uploads that no event consumed are deleted on this timer too, not only on the next
            upload (a client can post files to Gradio's upload route without ever running an event).
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

    def example_samples(value: str) -> list[list[str]]:
        return [[e.image_path.name, e.prompt] for e in md.examples_for(examples, value)]

    # Inside Gradio's cache folder, so that Gradio serves the session's files in place (no second copy).
    upload_root = Path(get_upload_folder())
    export_root = upload_root / "afloc-sessions" / uuid.uuid4().hex[:12]
    export_root.mkdir(parents=True, exist_ok=True)
    live: weakref.WeakValueDictionary[str, cb.Session] = weakref.WeakValueDictionary()
    budget = MemoryBudget(memory_budget_bytes)

    started = time.time()

    def sweep_uploads() -> None:
        sweep_empty_temp_files(upload_root)
        sweep_orphan_uploads(upload_root, since=started)

    stop_sweeping = threading.Event()

    def sweep_on_a_timer() -> None:
        while not stop_sweeping.wait(sweep_interval_s):
            try:
                sweep_uploads()
            except Exception as error:  # never let the sweeper die: log the type only
                logger.warning("upload sweep failed (%s)", type(error).__name__)

    threading.Thread(target=sweep_on_a_timer, name="afloc-upload-sweep", daemon=True).start()

    def session_id_of(request: gr.Request | None) -> str:
        return "".join(c for c in str(getattr(request, "session_hash", "") or "") if c.isalnum())[:64]

    def session_of(state: cb.Session | None, request: gr.Request | None) -> cb.Session:
        if state is not None and not state.closed:
            session = state
        else:
            session_id = session_id_of(request) or uuid.uuid4().hex
            session = cb.Session(export_dir=export_root / session_id)
            live[session_id] = session
        session.touch()
        # on every request, before this session's lock is taken: the least recently used sessions give up
        # their arrays first (a busy one is skipped, so no request ever waits for another session's lock)
        budget.enforce(session, list(live.values()))
        return session

    def guarded(fn):
        """Unexpected errors become a message (type only: no values that could come from a DICOM header)."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as error:  # the server must keep serving whatever one request does
                trace = "".join(traceback.format_tb(error.__traceback__))
                logger.error("%s failed with %s\n%s", fn.__name__, type(error).__name__, trace)
                message = f"Unexpected error ({type(error).__name__}); please try another input."
                return {status: _status(cb.Status(message, error=True))}

        return wrapper

    with gr.Blocks(title="AFLoc demo", analytics_enabled=False, delete_cache=(300, 1800)) as demo:
        state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=lambda s: s and s.close())
        gr.Markdown(HEADER)
        banner = gr.Markdown(md.banner(store, start_modality, default_model), label="warnings")
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    choices = md.model_choices(store, start_modality)
                    model = gr.Dropdown(choices, value=default_model, label="Model", scale=4)
                    refresh = gr.Button("↻ Refresh models", scale=1, size="sm")
                with gr.Accordion("Model card", open=False):
                    card = gr.Markdown(store.card(default_model), label="model card")
                upload = gr.File(label="Image: PNG, JPEG or DICOM (recognised by content)", type="filepath")
                example_list = gr.Dataset(
                    label="Examples with ground truth (of the chosen modality)",
                    components=["textbox", "textbox"],
                    headers=["example", "suggested prompt"],
                    samples=example_samples(start_modality),
                    type="index",
                    layout="table",
                )
                film = gr.Image(label="Input image", interactive=False, format="png", height=320)
                modality = gr.Radio([(md.LABELS[m], m) for m in md.MODALITIES], value=start_modality, label="Modality")
                presets = gr.Dropdown(md.presets(start_modality), value=[], multiselect=True, label="Finding presets")
                prompt_box = gr.Textbox(
                    label="Findings to localize (comma- or newline-separated)",
                    placeholder="e.g. left lower lobe consolidation, small right pleural effusion",
                    lines=2,
                )
                run = gr.Button("Localize", variant="primary")
            with gr.Column(scale=3):
                status = gr.Markdown(label="status")
                figure = gr.Image(label="Heatmap (blue: low, red: high similarity)", interactive=False, format="png")
                shown = gr.Dropdown([], label="Show prompt", allow_custom_value=True)
                with gr.Row():
                    threshold_slider = gr.Slider(
                        -1, 1, value=cb.DEFAULT_THRESHOLD, step=0.01, label="Threshold (contour of heatmap > t)"
                    )
                    opacity_slider = gr.Slider(0, 1, value=cb.DEFAULT_OPACITY, step=0.05, label="Heatmap opacity")
                metrics = gr.Markdown(label="metrics")
                probabilities = gr.Label(label="Zero-shot probability of standard findings", num_top_classes=9)
                with gr.Accordion("Ground truth", open=False):
                    annotations = gr.File(label="Annotation file: COCO JSON, MS-CXR CSV, YOLO txt or CSV x,y,w,h,label")
                    boxes = gr.Textbox(label="Boxes", info=BOXES_HELP, lines=3)
                    apply_boxes = gr.Button("Apply boxes")
                with gr.Row():
                    export_button = gr.Button("Export PNG + heatmap (.npy) + JSON")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False)

        def view_outputs(session: cb.Session, selected, t, o) -> dict:
            view = cb.render(session, selected, t, o)
            return {figure: session.save_view("figure", view.figure), metrics: view.metrics_text}

        def cleared(session: cb.Session, message: cb.Status, display=None) -> dict:
            return {
                state: session,
                film: display,
                figure: None,
                shown: gr.Dropdown(choices=[], value=None),
                metrics: "",
                probabilities: None,
                status: _status(message),
            }

        def modality_updates(value: str, model_key: str | None) -> dict:
            """The presets, model list (and model), warnings and examples that go with a modality."""
            key = md.default_model(store, value, model_key)
            return {
                presets: gr.Dropdown(choices=md.presets(value), value=[]),
                model: gr.Dropdown(choices=md.model_choices(store, value), value=key),
                banner: md.banner(store, value, key),
                example_list: gr.Dataset(samples=example_samples(value)),
            }

        @guarded
        def on_upload(state_value, image_file, model_key, request: gr.Request):
            session = session_of(state_value, request)
            with session.lock:
                name = Path(image_file).name if image_file else ""
                display, message = cb.load_image(session, image_file, name, max_pixels)
                discard_upload(image_file, upload_root)  # decoded: the upload (a DICOM's header too) goes now
                sweep_uploads()  # and any earlier upload that no event consumed
                display = session.save_view("film", display)
                if message.error:
                    return {state: session, status: _status(message)}
                updates = modality_updates(session.modality, model_key)  # a colour photo switches to fundus
                return cleared(session, message, display) | {modality: session.modality} | updates

        @guarded
        def on_example(state_value, example_index, modality_value, request: gr.Request):
            shown_examples = md.examples_for(examples, md.checked(modality_value))
            if not isinstance(example_index, int) or not 0 <= example_index < len(shown_examples):
                raise gr.Error(
                    f"There is no example {example_index!r}; choose one of the {len(shown_examples)} listed."
                )
            session, example = session_of(state_value, request), shown_examples[example_index]
            with session.lock:
                display, message = cb.load_example(session, example, max_pixels)
                display = session.save_view("film", display)
                if message.error:
                    raise gr.Error(message.message)
                presets_update = gr.Dropdown(choices=list(FINDINGS_BY_MODALITY[session.modality]), value=[])
                return cleared(session, message, display) | {
                    modality: session.modality,
                    presets: presets_update,
                    prompt_box: example.prompt,
                    boxes: cb.boxes_to_text(example.boxes),
                }

        @guarded
        def on_localize(
            state_value, model_key, prompts, preset_findings, shown_prompt, threshold, opacity, request: gr.Request
        ):
            session = session_of(state_value, request)
            with session.lock:
                try:
                    loaded = store.get(model_key)
                except ValueError as error:
                    return {state: session, status: _status(cb.Status(str(error), error=True))}
                message = cb.localize(session, loaded, prompts, preset_findings)
                if message.error:
                    return {state: session, status: _status(message)}
                selected = shown_prompt if shown_prompt in session.heatmaps else session.prompts[0]
                return view_outputs(session, selected, threshold, opacity) | {
                    state: session,
                    shown: gr.Dropdown(choices=session.prompts, value=selected),
                    probabilities: session.probabilities,
                    status: _status(message),
                }

        @guarded
        def on_redraw(state_value, shown_prompt, threshold, opacity, request: gr.Request):
            session = session_of(state_value, request)
            with session.lock:
                return view_outputs(session, shown_prompt, threshold, opacity) | {state: session}

        @guarded
        def on_boxes(state_value, boxes_text, shown_prompt, threshold, opacity, request: gr.Request):
            session = session_of(state_value, request)
            with session.lock:
                message = cb.set_boxes_text(session, boxes_text)
                return view_outputs(session, shown_prompt, threshold, opacity) | {
                    state: session,
                    status: _status(message),
                }

        @guarded
        def on_annotations(state_value, annotation_file, shown_prompt, threshold, opacity, request: gr.Request):
            session = session_of(state_value, request)
            with session.lock:
                text, message = (
                    cb.load_annotations(session, annotation_file) if annotation_file else (None, cb.Status("No file."))
                )
                discard_upload(annotation_file, upload_root)
                outputs = view_outputs(session, shown_prompt, threshold, opacity) | {
                    state: session,
                    status: _status(message),
                }
                return outputs | ({boxes: text} if text is not None else {})

        @guarded
        def on_export(state_value, shown_prompt, threshold, opacity, request: gr.Request):
            session = session_of(state_value, request)
            with session.lock:
                files, message = cb.export(session, shown_prompt, threshold, opacity)
                return {state: session, downloads: [str(f) for f in files] or None, status: _status(message)}

        @guarded
        def on_model(state_value, model_key, request: gr.Request):
            session = session_of(state_value, request)
            with session.lock:
                try:
                    loaded = store.get(model_key)
                except ValueError as error:
                    banner_text = "### ⚠️ This model could not be loaded: choose another one."
                    return {card: "", banner: banner_text, status: _status(cb.Status(str(error), error=True))}
                session.set_encoded(None)
                session.model_key = None
                message = cb.Status(f"Model {loaded.name} ready. Press Localize.")
                return cleared(session, message, gr.skip()) | {
                    card: loaded.card,
                    banner: md.banner(store, session.modality, loaded.key),
                }

        @guarded
        def on_refresh(model_key, modality_value):
            value = md.checked(modality_value)
            return gr.Dropdown(choices=md.model_choices(store, value), value=md.default_model(store, value, model_key))

        @guarded
        def on_modality(state_value, modality_value, model_key, request: gr.Request):
            session = session_of(state_value, request)
            value = md.checked(modality_value)
            session.modality = value
            return {state: session} | modality_updates(value, model_key)

        everything = [state, film, modality, presets, prompt_box, boxes, figure, shown, metrics, probabilities, status]
        redraw_outputs = [state, figure, metrics, status]
        switched = [model, banner, example_list]  # what a change of modality also updates
        upload_outputs = [*everything[:-1], *switched, status]  # the status stays last (clients read [-1])
        upload.upload(on_upload, [state, upload, model], upload_outputs, api_name="load_image")
        example_list.click(on_example, [state, example_list, modality], everything, api_name="load_example").success(
            on_localize,
            [state, model, prompt_box, presets, shown, threshold_slider, opacity_slider],
            [state, figure, shown, metrics, probabilities, status],
            api_visibility="private",
        )
        localize_inputs = [state, model, prompt_box, presets, shown, threshold_slider, opacity_slider]
        localize_outputs = [state, figure, shown, metrics, probabilities, status]
        run.click(on_localize, localize_inputs, localize_outputs, api_name="localize")
        redraw_inputs = [state, shown, threshold_slider, opacity_slider]
        shown.input(on_redraw, redraw_inputs, redraw_outputs, api_name="redraw", show_progress="hidden")
        for slider in (threshold_slider, opacity_slider):
            slider.change(
                on_redraw,
                redraw_inputs,
                redraw_outputs,
                api_visibility="private",
                trigger_mode="always_last",
                show_progress="hidden",
            )
        apply_boxes.click(
            on_boxes, [state, boxes, shown, threshold_slider, opacity_slider], redraw_outputs, api_name="set_boxes"
        )
        annotations.upload(
            on_annotations,
            [state, annotations, shown, threshold_slider, opacity_slider],
            redraw_outputs + [boxes],
            api_name="load_annotations",
        )
        export_button.click(
            on_export, [state, shown, threshold_slider, opacity_slider], [state, downloads, status], api_name="export"
        )
        model.change(
            on_model,
            [state, model],
            [state, film, figure, shown, metrics, probabilities, status, card, banner],
            api_name="select_model",
        )
        refresh.click(on_refresh, [model, modality], [model], api_name="refresh_models")
        modality.input(on_modality, [state, modality, model], [state, presets] + switched, api_name="set_modality")

        def on_unload(request: gr.Request):
            """The tab was closed (or the client left): free the session's memory and delete its files now.

            Gradio would keep its per-session copy of the page's configuration (about 2 MB here) until 10,000
            sessions had passed; it is dropped now, as the closed session is not used again.
            """
            session_id = session_id_of(request)
            forget_gradio_session(demo, getattr(request, "session_hash", None))
            session = live.pop(session_id, None) if session_id else None
            if session is not None:
                session.close()
            if session_id:
                shutil.rmtree(export_root / session_id, ignore_errors=True)
            sweep_uploads()
            release_freed_memory()
            # and once more later, for what the last uploads before the tab closed left (too young to judge now)
            later = threading.Timer(ORPHAN_UPLOAD_AGE_S + 5.0, sweep_uploads)
            later.daemon = True
            later.start()

        demo.unload(on_unload)
    weakref.finalize(demo, shutil.rmtree, export_root, ignore_errors=True)
    weakref.finalize(demo, stop_sweeping.set)  # the sweeper thread ends with the demo
    demo.afloc_stop_sweeping = stop_sweeping
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=queue_size)
    return demo
