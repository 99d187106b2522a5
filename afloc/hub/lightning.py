"""Reading a Lightning checkpoint of this project's training (``python -m training fit``) as a model bundle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..imaging.transforms import Preprocessing
from ..modeling.config import AFLocConfig
from ..modeling.network import AFLoc
from ..text.tokenizer import load_tokenizer
from .bundle import ModelBundle, read_output_settings
from .cards import render_model_card
from .state_dict import load_state_dict_strict


def load_lightning_checkpoint(path: Path, device: str | torch.device) -> ModelBundle:
    """Our training's ``.ckpt``: ``checkpoint["afloc"]["model_config"]`` + ``state_dict`` keys prefixed ``model.``."""
    import pickle

    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds pickled objects that are not plain tensors/containers and will not be unpickled "
            f"(for the authors' checkpoints use `python -m afloc.convert`): {error}"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"{path.name} is not a readable PyTorch checkpoint (truncated or corrupt?): {error}"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path.name} is not a Lightning checkpoint (no 'state_dict')")
    hyper = checkpoint.get("afloc") or {}
    if "model_config" not in hyper:
        raise ValueError(f"{path.name} has no ['afloc']['model_config'] entry; it was not written by afloc training")
    config = AFLocConfig.from_dict(hyper["model_config"])
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model = AFLoc(config)
    load_state_dict_strict(model, state)
    preprocessing = Preprocessing.from_dict(hyper.get("preprocessing") or {"image_size": config.image.image_size})
    localization, zero_shot = read_output_settings(hyper)
    tokenizer = load_tokenizer(config.text.name_or_path, max_length=config.text.max_length)
    card = render_model_card(name=path.stem, provenance=f"Lightning checkpoint {path.name} (not exported)")
    bundle = ModelBundle(model.to(device).eval(), tokenizer, preprocessing, localization, card, path)
    return dataclasses.replace(bundle, zero_shot=zero_shot)
