"""Shared fixtures: a tiny offline WordPiece vocabulary, tokenizer, BERT config, AFLoc model and predictor."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import settings

DATA_DIR = Path(__file__).parent / "data"

# The tests launch the demo without app.py, so they set what app.py sets before gradio is imported: no telemetry.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Property tests (tests/test_properties.py) draw new examples on every local run; under CI they are derandomized
# (the same examples every run), so that a CI result does not depend on the draw.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session", autouse=True)
def _offline_hub():
    """Tests never touch the network: the Hugging Face hub is switched to offline mode for the session."""
    saved = {name: os.environ.get(name) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def vocab_file() -> Path:
    """A ~400-entry lower-case BERT WordPiece vocabulary with ``##`` pieces ([PAD] = 0)."""
    path = DATA_DIR / "vocab.txt"
    assert path.is_file(), f"missing test vocabulary {path}"
    return path


@pytest.fixture(scope="session")
def _vocab_size(vocab_file) -> int:
    return len(vocab_file.read_text(encoding="utf-8").splitlines())


@pytest.fixture(scope="session")
def tiny_tokenizer(vocab_file, _vocab_size, tmp_path_factory):
    """``ReportTokenizer`` over the tiny vocabulary, ``max_length=32``.

    Built with ``from_pretrained`` on a directory holding only ``vocab.txt``: it loads offline under both
    transformers 4 and 5 (in transformers 5, ``BertTokenizerFast(vocab_file=...)`` silently ignores the file
    and keeps only the five special tokens).
    """
    from transformers import BertTokenizerFast

    from afloc.text.tokenizer import ReportTokenizer

    directory = tmp_path_factory.mktemp("tiny_vocab")
    shutil.copy(vocab_file, directory / "vocab.txt")
    bert_tokenizer = BertTokenizerFast.from_pretrained(str(directory), do_lower_case=True, local_files_only=True)
    assert len(bert_tokenizer) == _vocab_size, "the test vocabulary was not loaded"
    return ReportTokenizer(bert_tokenizer, max_length=32)


@pytest.fixture(scope="session")
def tiny_bert_config(_vocab_size) -> dict:
    """``transformers.BertConfig`` keyword arguments of a 4-layer, 32-wide BERT over the tiny vocabulary."""
    return {
        "vocab_size": _vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    }


@pytest.fixture(scope="session")
def tiny_config(tiny_bert_config):
    """ResNet-18 at 64x64 + the tiny BERT (D = 32, max_length = 32, sum of the last 4 layers)."""
    from afloc.modeling.config import AFLocConfig, ImageEncoderConfig, TextEncoderConfig

    return AFLocConfig(
        image=ImageEncoderConfig(backbone="resnet18", image_size=64),
        text=TextEncoderConfig(bert_config=tiny_bert_config, max_length=32, last_n_layers=4),
    )


@pytest.fixture
def tiny_model(tiny_config):
    """A randomly initialised (seed 0) tiny ``AFLoc`` in eval mode; fresh per test, so tests may modify it."""
    import afloc

    torch.manual_seed(0)
    model = afloc.AFLoc(tiny_config)
    return model.eval()


@pytest.fixture
def tiny_predictor(tiny_model, tiny_tokenizer):
    """``AFLocPredictor`` of :func:`tiny_model` and :func:`tiny_tokenizer` on the CPU, 64x64 preprocessing."""
    import afloc

    return afloc.AFLocPredictor(tiny_model, tiny_tokenizer, afloc.Preprocessing(image_size=64), device="cpu")


@pytest.fixture
def one_torch_thread():
    """Torch on one thread during the test: the tiny model runs faster, a thread pool only adds contention.

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
