"""Each demo control moved through a Gradio client, the way a browser does, and the output checked to change as
a user expects: the model selector, the presets, the prompt box (commas and new lines), the opacity and threshold
sliders through /redraw, and an example with its ground truth. (Uploads, boxes, exports and the modality switch
are driven the same way in ``test_demo_server.py`` and ``test_demo_modality.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import free_port, save_synthetic_tiny
from PIL import Image

import afloc
from afloc.imaging.io import load_image
from afloc.text.prompts import FINDINGS_BY_MODALITY
from demo import callbacks as cb

gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
FILM = EXAMPLES / "phantom_mass.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_config, tiny_tokenizer):
    """The real app on a free port with two tiny chest models that differ only in their random weights."""
    import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("models")
    paths = {}
    for seed, name in ((0, "tiny_a"), (1, "tiny_b")):
        save_synthetic_tiny(models, name, tiny_config, tiny_tokenizer, seed=seed)
    port = free_port()
    blocks, launch_kwargs, store, default = app.create(
        ["--models-dir", str(models), "--model", str(models / "tiny_a"), "--port", str(port)]
    )
    paths = {name: store.key_for(models / name) for name in ("tiny_a", "tiny_b")}  # the dropdown's opaque keys
    paths |= {f"{name}_dir": models / name for name in ("tiny_a", "tiny_b")}
    blocks.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "default": default, **paths}
    finally:
        blocks.close()
        torch.set_num_threads(threads)


def _client(server, tmp_path):
    return gradio_client.Client(server["url"], verbose=False, analytics_enabled=False, download_files=str(tmp_path))


def _loaded(server, tmp_path, image: Path = FILM):
    c = _client(server, tmp_path)
    status = c.predict(gradio_client.handle_file(str(image)), api_name="/load_image")[-1]
    assert status.startswith("Loaded"), status
    return c


def _localize(c, model, text, presets=(), threshold=0.3, opacity=0.5):
    return c.predict(model, text, list(presets), None, threshold, opacity, "file", api_name="/localize")


def _export_heatmap(c, prompt, threshold=0.3, opacity=0.5) -> tuple[np.ndarray, dict]:
    files, status = c.predict(prompt, threshold, opacity, "file", api_name="/export")
    assert status.startswith("Exported"), status
    by_suffix = {Path(f).suffix: Path(f) for f in files}
    return np.load(by_suffix[".npy"]), json.loads(by_suffix[".json"].read_text())


def _shown(shown: dict) -> list[str]:
    return [choice[0] for choice in shown["choices"]]


def test_model_selector_changes_the_heatmap_to_that_models(server, tmp_path):
    """Choosing the other model and pressing Localize gives that model's heatmap, not the first one's."""
    c = _loaded(server, tmp_path)
    assert _localize(c, server["tiny_a"], "mass")[-1].startswith("Localized")
    first, record_a = _export_heatmap(c, "mass")
    outputs = c.predict(server["tiny_b"], api_name="/select_model")
    assert "tiny_b ready" in json.dumps(outputs)
    # the selection clears the result: the film must be localized again with the new model
    assert _localize(c, server["tiny_b"], "mass")[-1].startswith("Localized")
    second, record_b = _export_heatmap(c, "mass")
    image = load_image(FILM)
    for path, heatmap in ((server["tiny_a_dir"], first), (server["tiny_b_dir"], second)):
        predictor = afloc.AFLocPredictor.from_pretrained(path, device="cpu")
        expected = predictor.localize("mass", image=predictor.encode_image(image))
        np.testing.assert_allclose(heatmap, expected, atol=1e-5, equal_nan=True)
    assert not np.allclose(first, second, equal_nan=True)
    assert record_a["model"] != record_b["model"]


def test_presets_and_prompt_box_give_one_heatmap_each_in_order(server, tmp_path):
    """Commas and new lines split the prompt box; ticked presets follow it; a repeated finding is shown once."""
    c = _loaded(server, tmp_path)
    presets = list(FINDINGS_BY_MODALITY["cxr"])[:2]
    _, _, shown, *_, status = _localize(c, server["default"], "mass,\nnodule\n", presets)
    assert status.startswith("Localized"), status
    assert _shown(shown) == ["mass", "nodule", *presets]
    # every prompt has its own heatmap
    heatmaps = {prompt: _export_heatmap(c, prompt)[0] for prompt in ("mass", presets[0])}
    assert not np.allclose(heatmaps["mass"], heatmaps[presets[0]], equal_nan=True)
    # presets alone, with an empty prompt box, are prompts too
    _, _, shown, *_, status = _localize(c, server["default"], "", presets[:1])
    assert status.startswith("Localized") and _shown(shown) == presets[:1]


def test_opacity_and_threshold_through_redraw(server, tmp_path):
    """/redraw with another opacity changes the figure's pixels; another threshold changes the metrics."""
    c = _loaded(server, tmp_path)
    assert _localize(c, server["default"], "mass")[-1].startswith("Localized")
    c.predict("10, 10, 30, 30", None, 0.3, 0.5, "file", api_name="/set_boxes")
    figures, metrics = {}, {}
    for threshold, opacity in ((0.3, 0.0), (0.3, 0.9), (-0.9, 0.9)):
        figure, _, table, *_, status = c.predict("mass", threshold, opacity, "file", api_name="/redraw")
        assert status == {"__type__": "update"}  # a redraw leaves the status line as it was: no error
        figures[threshold, opacity] = np.asarray(Image.open(figure).convert("RGB"), dtype=np.int16)
        metrics[threshold, opacity] = table
    assert np.abs(figures[0.3, 0.0] - figures[0.3, 0.9]).max() > 20  # the overlay shows at 0.9, not at 0
    assert metrics[0.3, 0.9] != metrics[-0.9, 0.9]  # IoU and Dice follow the threshold
    assert metrics[0.3, 0.0] == metrics[0.3, 0.9]  # opacity is display only


def test_example_loads_its_ground_truth_and_scores_it(server, tmp_path):
    """An example with boxes: /load_example fills the boxes and prompt; localizing scores against those boxes."""
    shown = [e for e in cb.list_examples(EXAMPLES) if e.modality == "cxr"]  # the chest page lists these
    examples = [e for e in shown if e.boxes]
    index = shown.index(examples[0])
    c = _client(server, tmp_path)
    outputs = c.predict(index, api_name="/load_example")
    status = outputs[-1]
    assert not status.startswith("⚠"), status
    assert cb.parse_boxes_text(outputs[3]) == examples[0].boxes  # the boxes field shows the example's boxes
    _, _, _, table, *_, status = _localize(c, server["default"], examples[0].prompt)
    assert status.startswith("Localized"), status
    assert "IoU" in table and "Pointing game" in table
