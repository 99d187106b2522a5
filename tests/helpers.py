"""Small helpers shared by several test files (plain functions, not fixtures)."""

from __future__ import annotations

import io
import socket

import numpy as np
from PIL import Image


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
