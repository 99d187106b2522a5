"""Building models with pretrained weights (the only place that reads initial weights from disk)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ..modeling.config import AFLocConfig, TextEncoderConfig
from ..modeling.network import AFLoc
from ..modeling.text_encoder import TextEncoder
from ..text.tokenizer import resolve_text_model

logger = logging.getLogger(__name__)


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    # weights_only refuses arbitrary pickled objects
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_backbone_weights(model: AFLoc, source: str) -> None:
    """Load ResNet backbone weights from a state-dict file or ``"torchvision"`` (ImageNet, needs network).

    ``fc.*`` keys are ignored; any other missing or unexpected key raises ``ValueError`` listing them.
    """
    backbone = model.image_encoder.backbone
    if source == "torchvision":
        import torchvision

        if model.config.image.backbone not in torchvision.models.list_models():
            raise ValueError(f"torchvision has no pretrained weights for {model.config.image.backbone!r}")
        enum = torchvision.models.get_model_weights(model.config.image.backbone)
        state = enum.DEFAULT.get_state_dict(progress=False)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"image backbone weights file {str(path)!r} does not exist")
        state = _load_state_dict_file(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"backbone weights do not match the {model.config.image.backbone}: {error}") from error
    if missing or unexpected:
        raise ValueError(f"backbone weights do not match: missing keys {missing}, unexpected keys {unexpected}")


def pretrained_text_backbone(text: TextEncoderConfig) -> tuple[torch.nn.Module, TextEncoderConfig]:
    """The BERT named by ``text.name_or_path`` with its pretrained weights, and ``text`` with ``bert_config`` filled
    from it (so that a saved model rebuilds offline)."""
    from .weights import load_pretrained_bert  # imports transformers: only when needed

    path, local = resolve_text_model(text.name_or_path)
    backbone = load_pretrained_bert(path, local)
    bert_config = backbone.config.to_diff_dict()
    bert_config = {k: v for k, v in bert_config.items() if k not in ("_name_or_path", "transformers_version")}
    bert_config["hidden_size"] = backbone.config.hidden_size
    bert_config["num_hidden_layers"] = backbone.config.num_hidden_layers
    return backbone, dataclasses.replace(text, bert_config=bert_config)


def pretrained_text_encoder(text: TextEncoderConfig) -> TextEncoder:
    """Only the text encoder of :func:`build_model` (no image encoder): for checking text weights against their
    source."""
    backbone, filled = pretrained_text_backbone(text)
    return TextEncoder(filled, backbone)


def build_model(config: AFLocConfig | None = None, pretrained_text: bool = True) -> AFLoc:
    """Build an :class:`AFLoc` with pretrained text weights and optional initial image weights.

    Args:
        config: architecture; default = ResNet-50 + the offline MiniLM BERT.
        pretrained_text: load the BERT weights from ``config.text.name_or_path`` (else random weights from
            ``config.text.bert_config``).

    Returns:
        The model; ``model.config.text.bert_config`` is filled from the loaded BERT so that a saved model
        rebuilds offline.
    """
    config = config or AFLocConfig()
    text_backbone = None
    if pretrained_text:
        text_backbone, text = pretrained_text_backbone(config.text)
        config = dataclasses.replace(config, text=text)
    model = AFLoc(config, text_backbone)
    if config.image.initial_weights:
        load_backbone_weights(model, config.image.initial_weights)
    return model.train()  # from_pretrained leaves the BERT in eval mode; a new module is in training mode
