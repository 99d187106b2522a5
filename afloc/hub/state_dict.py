"""Loading weights into a network strictly: every key and shape must match, and a mismatch is named."""

from __future__ import annotations

import torch

from ..modeling.network import AFLoc


def load_state_dict_strict(model: AFLoc, state: dict[str, torch.Tensor], skip_prefix: str | None = None) -> None:
    """Load weights (cast to the model's dtypes); any key or shape mismatch raises ``ValueError`` listing them.

    ``skip_prefix``: keys the file is not expected to hold (external text weights, loaded separately).
    """
    expected = {k: v for k, v in model.state_dict().items() if not (skip_prefix and k.startswith(skip_prefix))}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        raise ValueError(
            f"weights do not match the architecture: missing keys {missing}, unexpected keys {unexpected}, "
            f"shape mismatches {shapes}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=skip_prefix is None)
