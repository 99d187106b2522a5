"""Small helpers shared by several test files (plain functions, not fixtures)."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
from PIL import Image

# The project's development data (real images and annotations), laid beside the checkout as ../shared/data; a
# clone of this repository alone does not have it, and the tests that read it skip, saying so.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_DATA_HINT = (
    "the project's development data, laid beside this checkout as ../shared/data (see the README, "
    "'Running the tests': it is not part of this repository)"
)


def shared_data(relative: str, path: Path | None = None) -> Path:
    """``../shared/data/<relative>`` (or ``path``), or a pytest skip that names the file and how to get it."""
    import pytest

    path = SHARED_DATA / relative if path is None else path
    if not path.exists():
        pytest.skip(f"needs {path} ({SHARED_DATA_HINT})")
    return path


def free_port() -> int:
    """A TCP port on localhost that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def truncated_png() -> bytes:
    """A 64x64 PNG with its last 200 bytes cut off."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()[:-200]


def huge_png() -> bytes:
    """A 3000x2000 (6 MP) PNG that is a small file: tests pixel limits, not upload limits."""
    buffer = io.BytesIO()
    Image.new("L", (3000, 2000)).save(buffer, "PNG")
    return buffer.getvalue()


def without_bundled_models(empty_dir):
    """A started ``pytest.MonkeyPatch`` pointing the demo's bundled-models folder at ``empty_dir`` (call ``.undo()``).

    For app tests whose story starts with no model of a modality installed, now that assets/models ships both a
    chest and a fundus model.
    """
    import pytest

    patch = pytest.MonkeyPatch()
    patch.setattr("demo.models.BUNDLED_MODELS_DIR", empty_dir)
    return patch


def save_synthetic_tiny(folder: Path, name: str, config, tokenizer, preprocessing=None, seed: int = 0) -> Path:
    """A tiny random AFLoc saved as ``folder/name``, marked (card and metadata) as a synthetic-data model, as the
    demo's server tests serve it."""
    import torch

    import afloc
    from afloc.hub.bundle import ModelMetadata
    from afloc.hub.cards import render_model_card

    torch.manual_seed(seed)
    return afloc.save_pretrained(
        afloc.AFLoc(config).eval(),
        folder / name,
        tokenizer,
        preprocessing or afloc.Preprocessing(64),
        card=render_model_card(name, synthetic_data=True),
        metadata=ModelMetadata(synthetic_data=True),
    )
