"""The text settings a released checkpoint was trained with, read from its saved config as plain data.

Both reference implementations (AFLoc and GLoRIA) save their OmegaConf config in the Lightning checkpoint's
``hyper_parameters``. The restricted unpickler never imports OmegaConf: the config arrives as inert placeholders
(:class:`afloc.convert.pickle_records.Inert`) holding what OmegaConf pickles, a ``DictConfig`` / ``ListConfig``
whose state has a ``_content`` (a dict or list of nodes) and value nodes whose state has a ``_val``.
:func:`plain_values` turns that (or plain dicts and lists) back into nested dicts, lists and atoms, and nothing
else: no object is created and no code runs. :func:`text_settings` then checks the settings our text encoder
implements against the config: one that differs is refused, naming it; missing ones are reported as assumed.
"""

from __future__ import annotations

from typing import Any

from .pickle_records import Inert

SUPPORTED_TEXT_SETTINGS: dict[tuple[str, ...], Any] = {
    ("model", "text", "last_n_layers"): 4,
    ("model", "text", "aggregate_method"): "sum",
    ("model", "text", "norm"): False,
    ("model", "text", "agg_tokens"): True,
    ("data", "text", "word_num"): 97,
}
"""What :class:`afloc.AFLoc`'s text encoder computes for a converted checkpoint: the sum of the last 4 BERT layers,
word pieces summed into words, no normalisation, 97 word pieces per report. ``model.text.embedding_dim`` must
equal the BERT's hidden size (checked by the converter, which knows it)."""
_ATOMS = (str, int, float, bool, type(None))
_MAX_DEPTH = 32


def plain_values(obj: Any, depth: int = 0) -> Any:
    """Nested dicts, lists and atoms of a saved config; what is neither (an unknown object) becomes ``None``."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, dict):
        return {str(k): plain_values(v, depth + 1) for k, v in obj.items() if isinstance(k, str | int)}
    if isinstance(obj, list | tuple):
        return [plain_values(v, depth + 1) for v in obj]
    if isinstance(obj, Inert) and not isinstance(obj, type):
        state = obj.state[0] if isinstance(obj.state, tuple) and obj.state else obj.state
        if isinstance(state, dict):
            if "_content" in state:  # DictConfig / ListConfig
                return plain_values(state["_content"], depth + 1)
            if "_val" in state:  # a value node
                return plain_values(state["_val"], depth + 1)
        if obj.items:  # a dict subclass pickled by its items
            return plain_values(obj.items, depth + 1)
    return None


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return _MISSING
        config = config[key]
    return config


_MISSING = object()


def text_settings(hyper_parameters: Any, hidden_size: int) -> list[str]:
    """Check the saved config's text settings against what the converter supports.

    Returns:
        Lines for the model card: each setting, read from the config or assumed (when the checkpoint carries no
        config, or not this key).

    Raises:
        ValueError: a setting the config holds differs from the supported one (the setting and both values named).
    """
    config = plain_values(hyper_parameters)
    if isinstance(config, dict) and isinstance(config.get("cfg"), dict):  # saved as self.save_hyperparameters(cfg=...)
        config = config["cfg"]
    wanted = dict(SUPPORTED_TEXT_SETTINGS)
    wanted[("model", "text", "embedding_dim")] = hidden_size
    lines, refused = [], []
    for path, supported in wanted.items():
        value = _get(config, path)
        name = ".".join(path)
        if value is _MISSING or value is None:
            lines.append(f"{name} = {supported!r} (assumed: not in the checkpoint's config)")
        elif value != supported or type(value) is not type(supported):
            refused.append(f"{name} = {value!r} (supported: {supported!r})")
        else:
            lines.append(f"{name} = {value!r} (read from the checkpoint's config)")
    if refused:
        raise ValueError(
            "the checkpoint was trained with text settings this converter does not implement: "
            + "; ".join(refused)
            + ". Its text embeddings would be wrong, so it is not converted."
        )
    return lines
