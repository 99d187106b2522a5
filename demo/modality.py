"""What goes with a modality (chest X-ray or fundus photo): its models, prompt presets and examples. No gradio.

A model's modality is the one recorded in its ``preprocessing.json`` (:attr:`afloc.Preprocessing.modality`,
``"cxr"`` for directories written before the field existed); it is read without loading the weights. When no
trained model of a modality is installed, the untrained model is offered instead, with a message saying so: a
fundus model appears automatically (after "refresh") once a directory with ``"modality": "fundus"`` is put into
``assets/models/`` or the user models folder.
"""

from __future__ import annotations

from collections.abc import Sequence

from afloc.imaging.transforms import MODALITIES
from afloc.text.prompts import FINDINGS_BY_MODALITY

from .models import UNTRAINED_KEY, ModelStore, model_banner

LABELS = {"cxr": "Chest X-ray", "fundus": "Fundus photo"}
UNTRAINED_CHOICE = ("untrained model (random weights)", UNTRAINED_KEY)


def checked(modality: str | None) -> str:
    """A known modality (anything else, e.g. from a client, becomes ``"cxr"``)."""
    return modality if modality in MODALITIES else "cxr"


def presets(modality: str) -> list[str]:
    return list(FINDINGS_BY_MODALITY[checked(modality)])


def model_modality(store: ModelStore, key: str) -> str | None:
    """The modality a model was trained for; ``None`` for the untrained model (it serves any)."""
    if key == UNTRAINED_KEY:
        return None
    if key in store.preloaded:
        preprocessing = getattr(store.preloaded[key].predictor, "preprocessing", None)
        return checked(getattr(preprocessing, "modality", "cxr"))
    try:
        return checked(store.model_info(key)[0].modality)
    except ValueError:
        return "cxr"  # unreadable: listed with the default modality, loading it reports the problem


def trained_models(store: ModelStore, modality: str) -> list[tuple[str, str]]:
    """``[(label, key)]`` of the trained models recorded with ``modality`` (discovery order)."""
    return [(label, key) for label, key in store.discover() if model_modality(store, key) == checked(modality)]


def model_choices(store: ModelStore, modality: str) -> list[tuple[str, str]]:
    """Dropdown choices for a modality: its trained models, or the untrained model when there is none."""
    return trained_models(store, modality) or [UNTRAINED_CHOICE]


def default_model(store: ModelStore, modality: str, current: str | None = None) -> str:
    """``current`` if it serves ``modality``, else the modality's first model (the untrained one when none)."""
    keys = [key for _, key in model_choices(store, modality)]
    return current if current in keys else keys[0]


def missing_model_message(store: ModelStore, modality: str) -> str:
    """Markdown saying that no trained model of ``modality`` is installed; ``""`` when one is."""
    if trained_models(store, modality):
        return ""
    return (
        f"### ⚠️ No {LABELS[checked(modality)].lower()} model is installed\n"
        "The untrained model stands in, so the demo can be tried, but its heatmaps mean nothing. A model directory "
        f'whose `preprocessing.json` records `"modality": "{checked(modality)}"`, put into `assets/models/` or '
        "the user models folder, is offered here after ↻ Refresh."
    )


def banner(store: ModelStore, modality: str, key: str) -> str:
    """The warnings shown above the demo for this model and modality (without loading the model)."""
    parts = [missing_model_message(store, modality), model_banner(store.synthetic(key), key == UNTRAINED_KEY)]
    return "\n\n".join(part for part in parts if part)


def examples_for(examples: Sequence, modality: str) -> list:
    """The examples of one modality (each example records its own)."""
    return [example for example in examples if example.modality == checked(modality)]
