"""The demo's event handlers: each takes the components' values, runs one function of :mod:`demo.callbacks` on
the request's session, and returns the components to update (a dict keyed by component).

:class:`Handlers` holds what every handler needs (the components, the model store, the sessions, the examples)
so that its methods can be wired directly to Gradio events (Gradio reads their ``gr.Request`` parameters from
their signatures). ``demo/app.py`` builds the layout and does the wiring; the logic lives in ``callbacks``.
"""

from __future__ import annotations

import functools
import logging
import traceback
from pathlib import Path

import gradio as gr

from afloc.text.prompts import FINDINGS_BY_MODALITY

from . import callbacks as cb
from . import modality as md
from .decoding import DecodeWorker
from .export import export
from .layout import AUTOMATIC_LABEL, UI
from .messages import zero_shot_text
from .models import ModelStore
from .server import Sessions, forget_gradio_session
from .session import discard_upload, escape_markdown

logger = logging.getLogger(__name__)


def status_text(status: cb.Status) -> str:
    """The status line (messages quote user text: file names, prompts, labels, so they are escaped). An error is
    shown once, here, not also in a toast; the page scrolls it into view when it is off-screen
    (:data:`demo.app.ACCESSIBILITY`)."""
    if status.error:
        return f"**⚠️ {escape_markdown(status.message)}**"
    return escape_markdown(status.message)


def example_samples(examples: list[cb.Example], modality: str) -> list[list[str]]:
    """The example table's rows for a modality: file name and suggested prompt."""
    return [[e.image_path.name, e.prompt] for e in md.examples_for(examples, modality)]


def guarded(method):
    """Unexpected errors become a message (type only: no values that could come from a DICOM header)."""

    @functools.wraps(method)
    def wrapper(self: Handlers, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:  # the server must keep serving whatever one request does
            trace = "".join(traceback.format_tb(error.__traceback__))
            logger.error("%s failed with %s\n%s", method.__name__, type(error).__name__, trace)
            message = f"Unexpected error ({type(error).__name__}); please try another input."
            return {self.ui.status: status_text(cb.Status(message, error=True))}

    return wrapper


class Handlers:
    """The demo's event handlers over one layout (``ui``), model store, session registry and example list."""

    def __init__(
        self,
        ui: UI,
        store: ModelStore,
        sessions: Sessions,
        examples: list[cb.Example],
        max_pixels: int,
        decode: DecodeWorker,
        blocks,
    ) -> None:
        self.ui, self.store, self.sessions, self.examples, self.max_pixels = ui, store, sessions, examples, max_pixels
        self.decode = decode  # uploads are decoded in a limited child process
        self.blocks = blocks  # the page, whose Gradio state a closed session leaves behind

    # ------------------------------------------------------------------ shared updates
    def label_choices(self, session: cb.Session, prompt: str | None) -> gr.Dropdown:
        """The ground-truth labels a prompt can be scored against (the first choice: matching by label)."""
        choices = [(AUTOMATIC_LABEL, "")] + [(label, label) for label in session.box_labels()]
        return gr.Dropdown(choices=choices, value=session.chosen_labels.get(prompt or "", ""))

    def view_outputs(self, session: cb.Session, selected, threshold, opacity, window=None) -> dict:
        """The result panel for one prompt; before any result, the film as displayed (window) or nothing."""
        view = cb.render(session, selected, threshold, opacity, window)
        shown = view.overlay
        if shown is None and session.image is not None:
            shown = cb.to_rgb_uint8(cb.display_image(session.image, window))
        return {
            self.ui.figure: session.save_view("figure", shown),
            self.ui.key: view.key,
            self.ui.metrics: view.metrics_text,
            self.ui.notice: view.notice,
            self.ui.score_label: self.label_choices(session, view.prompt),
        }

    def cleared(self, session: cb.Session, message: cb.Status, display=None) -> dict:
        ui = self.ui
        return {
            ui.state: session,
            ui.figure: display,  # the film alone until it is localized: one copy of it on the page
            ui.key: "",
            ui.shown: gr.Dropdown(choices=[], value=None),
            ui.metrics: "",
            ui.score_label: self.label_choices(session, None),
            ui.probabilities: None,
            ui.zero_shot_notes: "",
            ui.notice: "",
            ui.status: status_text(message),
        }

    def modality_updates(self, value: str, model_key: str | None) -> dict:
        """The presets, model list (and model), warnings and examples that go with a modality."""
        ui, key = self.ui, md.default_model(self.store, value, model_key)
        return {
            ui.presets: gr.Dropdown(choices=md.presets(value), value=[]),
            ui.model: gr.Dropdown(choices=md.model_choices(self.store, value), value=key),
            ui.banner: md.banner(self.store, value, key),
            ui.example_list: gr.Dataset(samples=example_samples(self.examples, value)),
        }

    # ------------------------------------------------------------------ image
    @guarded
    def on_upload(self, state_value, image_file, model_key, request: gr.Request):
        ui, session = self.ui, self.sessions.get(state_value, request)
        with session.lock:
            name = Path(image_file).name if image_file else ""
            display, message = cb.load_image(session, image_file, name, self.max_pixels, self.decode)
            discard_upload(image_file, self.sessions.upload_root)  # decoded: the upload (a DICOM's header) goes now
            self.sessions.sweep_uploads()  # and any earlier upload that no event consumed
            display = session.save_view("figure", display)
            if message.error:  # the error on an empty page: nothing of the previous film stays
                return self.cleared(session, message, None) | {ui.boxes: "", ui.invert: False}
            updates = self.modality_updates(session.modality, model_key)  # a colour photo switches to fundus
            cleared = self.cleared(session, message, display) | {ui.boxes: "", ui.invert: False}
            return cleared | {ui.modality: session.modality} | updates

    @guarded
    def on_clear(self, state_value, request: gr.Request):
        """The upload was cleared: so are the film, its heatmaps, scores and ground truth."""
        session = self.sessions.get(state_value, request)
        with session.lock:
            cb.clear_image(session)
            return self.cleared(session, cb.Status("Image cleared."), None) | {self.ui.boxes: "", self.ui.invert: False}

    @guarded
    def on_presets(self, text, chosen):
        """A preset is inserted into the findings box (what is queried is what the box shows) and unticked."""
        return {self.ui.prompt_box: cb.insert_presets(text, chosen), self.ui.presets: gr.Dropdown(value=[])}

    @guarded
    def on_example(self, state_value, example_index, modality_value, request: gr.Request):
        ui, shown_examples = self.ui, md.examples_for(self.examples, md.checked(modality_value))
        if not isinstance(example_index, int) or not 0 <= example_index < len(shown_examples):
            raise gr.Error(f"There is no example {example_index!r}; choose one of the {len(shown_examples)} listed.")
        session, example = self.sessions.get(state_value, request), shown_examples[example_index]
        with session.lock:
            display, message = cb.load_example(session, example, self.max_pixels)
            display = session.save_view("figure", display)
            if message.error:
                raise gr.Error(message.message)
            return self.cleared(session, message, display) | {
                ui.modality: session.modality,
                ui.presets: gr.Dropdown(choices=list(FINDINGS_BY_MODALITY[session.modality]), value=[]),
                ui.prompt_box: example.prompt,
                ui.boxes: cb.boxes_to_text(example.boxes),
                ui.invert: False,
            }

    # ------------------------------------------------------------------ localization and its view
    @guarded
    def on_invert(self, state_value, inverted, window, request: gr.Request):
        """Invert the film (display and model input); its heatmaps are gone until the next Localize."""
        session = self.sessions.get(state_value, request)
        with session.lock:
            display, message = cb.set_inverted(session, inverted, window)
            if message.error:
                return {self.ui.state: session, self.ui.invert: session.inverted, self.ui.status: status_text(message)}
            return self.cleared(session, message, session.save_view("figure", display)) | {
                self.ui.invert: session.inverted
            }

    @guarded
    def on_localize(
        self,
        state_value,
        model_key,
        prompts,
        preset_findings,
        shown_prompt,
        threshold,
        opacity,
        window,
        request: gr.Request,
    ):
        ui, session = self.ui, self.sessions.get(state_value, request)
        with session.lock:
            try:
                loaded = self.store.get(model_key)
            except ValueError as error:
                return {ui.state: session, ui.status: status_text(cb.Status(str(error), error=True))}
            before = list(session.prompts)
            message = cb.localize(session, loaded, prompts, preset_findings)
            if message.error:
                return {ui.state: session, ui.status: status_text(message)}
            # what was just asked is what is shown: the first new prompt, else the one on display if still asked
            new = [p for p in session.prompts if p not in before]
            selected = new[0] if new else shown_prompt if shown_prompt in session.prompts else session.prompts[0]
            return self.view_outputs(session, selected, threshold, opacity, window) | {
                ui.state: session,
                ui.shown: gr.Dropdown(choices=session.prompts, value=selected),
                ui.probabilities: session.probabilities or None,
                ui.zero_shot_notes: zero_shot_text(session),
                ui.status: status_text(message),
            }

    @guarded
    def on_redraw(self, state_value, shown_prompt, threshold, opacity, window, request: gr.Request):
        session = self.sessions.get(state_value, request)
        with session.lock:
            return self.view_outputs(session, shown_prompt, threshold, opacity, window) | {self.ui.state: session}

    # ------------------------------------------------------------------ ground truth and export
    @guarded
    def on_boxes(self, state_value, boxes_text, shown_prompt, threshold, opacity, window, request: gr.Request):
        session = self.sessions.get(state_value, request)
        with session.lock:
            message = cb.set_boxes_text(session, boxes_text)
            return self.view_outputs(session, shown_prompt, threshold, opacity, window) | {
                self.ui.state: session,
                self.ui.status: status_text(message),
            }

    @guarded
    def on_score_label(self, state_value, label, shown_prompt, threshold, opacity, window, request: gr.Request):
        """The user chose which boxes the shown prompt is scored against."""
        session = self.sessions.get(state_value, request)
        with session.lock:
            message = cb.choose_label(session, shown_prompt, label)
            return self.view_outputs(session, shown_prompt, threshold, opacity, window) | {
                self.ui.state: session,
                self.ui.status: status_text(message),
            }

    @guarded
    def on_annotations(
        self, state_value, annotation_files, shown_prompt, threshold, opacity, window, request: gr.Request
    ):
        ui, session = self.ui, self.sessions.get(state_value, request)
        with session.lock:
            files = [annotation_files] if isinstance(annotation_files, str) else list(annotation_files or [])
            if files:
                text, message = cb.load_annotations(session, files)
            else:
                text, message = None, cb.Status("No file.")
            for file in files:
                discard_upload(file, self.sessions.upload_root)
            outputs = self.view_outputs(session, shown_prompt, threshold, opacity, window)
            outputs |= {ui.state: session, ui.status: status_text(message)}
            return outputs | ({ui.boxes: text} if text is not None else {})

    @guarded
    def on_class_names(self, state_value, dataset, shown_prompt, threshold, opacity, window, request: gr.Request):
        """A known dataset's YOLO class names for boxes uploaded without their names file."""
        ui, session = self.ui, self.sessions.get(state_value, request)
        with session.lock:
            text, message = cb.set_known_class_names(session, dataset)
            outputs = self.view_outputs(session, shown_prompt, threshold, opacity, window)
            outputs |= {ui.state: session, ui.status: status_text(message)}
            return outputs | ({ui.boxes: text} if text is not None else {})

    @guarded
    def on_export(self, state_value, shown_prompt, threshold, opacity, window, request: gr.Request):
        ui, session = self.ui, self.sessions.get(state_value, request)
        with session.lock:
            files, message = export(session, shown_prompt, threshold, opacity, window)
            return {ui.state: session, ui.downloads: [str(f) for f in files] or None, ui.status: status_text(message)}

    # ------------------------------------------------------------------ models and modality
    @guarded
    def on_model(self, state_value, model_key, request: gr.Request):
        ui, session = self.ui, self.sessions.get(state_value, request)
        with session.lock:
            try:
                loaded = self.store.get(model_key)
            except ValueError as error:
                banner_text = "### ⚠️ This model could not be loaded: choose another one."
                error_status = status_text(cb.Status(str(error), error=True))
                return {ui.card: "", ui.card_summary: "", ui.banner: banner_text, ui.status: error_status}
            session.set_encoded(None)
            session.model_key = None
            message = cb.Status(f"Model {loaded.name} ready. Press Localize.")
            film = cb.to_rgb_uint8(session.image) if session.image is not None else None
            return self.cleared(session, message, session.save_view("figure", film)) | {
                ui.card: loaded.card,
                ui.card_summary: self.store.card_summary(loaded.key),
                ui.banner: md.banner(self.store, session.modality, loaded.key),
            }

    @guarded
    def on_refresh(self, model_key, modality_value):
        value = md.checked(modality_value)
        key = md.default_model(self.store, value, model_key)
        return gr.Dropdown(choices=md.model_choices(self.store, value), value=key)

    @guarded
    def on_modality(self, state_value, modality_value, model_key, request: gr.Request):
        session, value = self.sessions.get(state_value, request), md.checked(modality_value)
        session.modality = value
        return {self.ui.state: session} | self.modality_updates(value, model_key)

    def on_unload(self, request: gr.Request):
        """The tab was closed (or the client left): the session's memory and files go now.

        Gradio would keep its per-session copy of the page's configuration (about 2 MB here) until 10,000
        sessions had passed; it is dropped now, as the closed session is not used again.
        """
        forget_gradio_session(self.blocks, getattr(request, "session_hash", None))
        self.sessions.close(request)
