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


# ------------------------------------------------------------------ decoders for demo.decoding (run in a child)
def slow_decode(data: bytes, *, max_pixels: int):
    """Sleeps: a decoder that takes too long in wall-clock time."""
    import time

    time.sleep(60)


def busy_decode(data: bytes, *, max_pixels: int):
    """Computes in pure Python (holding its GIL) until stopped: a decoder that takes too much CPU time."""
    total = 0
    while True:
        total += 1


def greedy_decode(data: bytes, *, max_pixels: int):
    """Allocates 8 GiB: a decoder that takes too much memory."""
    import numpy

    return numpy.ones(8 << 30, dtype=numpy.uint8), None


def crashing_decode(data: bytes, *, max_pixels: int):
    """Dies without a word, as a decoder with a memory error in C would."""
    import os

    os._exit(3)


# ------------------------------------------------------------------ hostile image files (issue #33)
def jpeg_bytes(width: int = 16, height: int = 12) -> bytes:
    """An honest small greyscale JPEG."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.arange(width * height) % 255).astype(np.uint8).reshape(height, width)).save(buffer, "JPEG")
    return buffer.getvalue()


def with_sof_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a baseline JPEG) with its frame header declaring ``width x height``."""
    import struct

    position = data.index(b"\xff\xc0")
    return data[: position + 5] + struct.pack(">HH", height, width) + data[position + 9 :]


def hostile_image_files() -> dict[str, tuple[bytes, str]]:
    """Small files that used to cost seconds or gigabytes to decode, each with a fragment of the message that
    refuses it: a JPEG declaring a huge frame, one with thousands of scans, a run-length BMP, a small DICOM
    carrying a huge JPEG, and a deflate bomb behind a small DICOM header."""
    import struct

    import numpy as np
    from pydicom import uid
    from pydicom.encaps import encapsulate
    from test_io import make_dicom

    honest = jpeg_bytes()
    end = honest.rindex(b"\xff\xd9")
    scan = honest[honest.index(b"\xff\xda") : end]
    header = b"BM" + struct.pack("<IHHI", 1078, 0, 0, 1078)
    info = struct.pack("<IiiHHIIiiII", 40, 64, 64, 1, 8, 1, 0, 2835, 2835, 256, 0)  # compression 1 = RLE8
    return {
        "huge_frame.jpg": (with_sof_size(honest, 20_000, 20_000), "codestream is 20000x20000"),
        "many_scans.jpg": (honest[:end] + scan * 2000 + b"\xff\xd9", "scans"),
        "rle.bmp": (header + info + bytes(1024) + b"\x00\x01", "run-length compressed BMP"),
        "huge_jpeg_inside.dcm": (
            make_dicom(
                np.zeros((12, 16), np.uint8),
                transfer_syntax=uid.JPEGBaseline8Bit,
                pixel_data=encapsulate([with_sof_size(honest, 13_000, 13_000)]),
            ),
            "codestream is 13000x13000",
        ),
        "deflate_bomb.dcm": (
            make_dicom(
                np.zeros((64, 64), np.uint16),
                transfer_syntax=uid.DeflatedExplicitVRLittleEndian,
                pixel_data=bytes(96 << 20),
            ),
            "inflates beyond the size its header declares",
        ),
    }
