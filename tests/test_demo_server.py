"""The real app on a local port, driven through ``gradio_client``: parallel sessions and bad inputs."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import free_port, hostile_image_files, huge_png, save_synthetic_tiny, truncated_png
from PIL import Image
from pydicom import uid
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from test_io import RAMP_12BIT, make_dicom

import afloc
from afloc.imaging.boxes import boxes_to_mask
from afloc.imaging.io import load_image
from afloc.localization.metrics import localization_metrics
from demo import callbacks as cb
from demo.annotations import boxes_for_prompt
from demo.models import BUNDLED_MODELS_DIR, find_model_dirs

gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
THRESHOLD = 0.2


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_config, tiny_tokenizer):
    """``app.create`` + launch on a free port, with a tiny model directory and a broken one next to it."""
    import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is faster on one thread; a pool only adds contention
    models = tmp_path_factory.mktemp("models")
    save_synthetic_tiny(models, "tiny", tiny_config, tiny_tokenizer)
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text("{not json")
    port = free_port()
    argv = ["--models-dir", str(models), "--model", str(models / "tiny"), "--port", str(port)]
    blocks, launch_kwargs, _, default = app.create(argv + ["--max-pixels", "1000000", "--max-file-size", "1mb"])
    assert launch_kwargs["server_name"] == "127.0.0.1" and launch_kwargs["share"] is False
    blocks.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    predictor = afloc.AFLocPredictor.from_pretrained(models / "tiny", device="cpu")
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "models": models, "tiny": default, "predictor": predictor,
               "blocks": blocks}  # fmt: skip
    finally:
        blocks.close()
        torch.set_num_threads(threads)


def client(server, tmp_path):
    return gradio_client.Client(server["url"], verbose=False, analytics_enabled=False, download_files=str(tmp_path))


def localize(c, server, prompts, threshold=THRESHOLD):
    return c.predict(server["tiny"], prompts, [], None, threshold, 0.5, "file", api_name="/localize")


def test_endpoints_are_named(server, tmp_path):
    names = set(client(server, tmp_path).view_api(print_info=False, return_format="dict")["named_endpoints"])
    expected = {"load_image", "load_example", "localize", "redraw", "set_boxes", "load_annotations", "export"}
    assert {f"/{name}" for name in expected | {"select_model", "refresh_models", "set_modality"}} <= names


def _session(server, tmp_path, image: Path, prompts: str, boxes: str) -> dict:
    c = client(server, tmp_path)
    status = c.predict(gradio_client.handle_file(str(image)), api_name="/load_image")[-1]
    assert status.startswith("Loaded"), status
    figure, _, shown, _, _, probabilities, notes, _, status = localize(c, server, prompts)
    assert status.startswith("Localized"), status
    assert [choice[0] for choice in shown["choices"]] == [p.strip() for p in prompts.split(",")]
    # the overlay on the original pixels (its colour bar and legend are page text); the tiny model has no calibration
    assert Image.open(figure).size == (256, 256) and "Uncalibrated scores" in notes
    c.predict(boxes, None, THRESHOLD, 0.5, "file", api_name="/set_boxes")
    second = prompts.split(",")[-1].strip()
    files, status = c.predict(second, THRESHOLD, 0.5, "file", api_name="/export")
    assert status.startswith("Exported"), status
    by_suffix = {Path(f).suffix: Path(f) for f in files}
    return {
        "prompt": second,
        "heatmap": np.load(by_suffix[".npy"]),
        "record": json.loads(by_suffix[".json"].read_text()),
        "png": np.asarray(Image.open(by_suffix[".png"]).convert("RGB")),
    }


def test_parallel_sessions_get_their_own_results(server, tmp_path):
    examples = [e for e in cb.list_examples(EXAMPLES) if e.modality == "cxr"][:8]  # the server's model is a CXR one
    jobs = [
        (example.image_path, f"{finding}, {example.prompt}", cb.boxes_to_text(example.boxes))  # exported: the 2nd
        for example, finding in zip(examples, afloc.text.prompts.CXR_FINDINGS, strict=False)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(_session, server, tmp_path / str(k), *job) for k, job in enumerate(jobs)]
        results = [future.result(timeout=300) for future in futures]
    predictor = server["predictor"]
    for (image_path, _, boxes_text), result in zip(jobs, results, strict=True):
        expected = predictor.localize(result["prompt"], image=predictor.encode_image(load_image(image_path)))
        np.testing.assert_allclose(result["heatmap"], expected, atol=1e-5, equal_nan=True)
        scored, _ = boxes_for_prompt(cb.parse_boxes_text(boxes_text), result["prompt"])
        assert scored  # the example's own prompt matches its boxes by label
        metrics = localization_metrics(expected, boxes_to_mask(scored, *expected.shape), THRESHOLD)
        recorded = {k: np.nan if v is None else v for k, v in result["record"]["metrics"].items() if k != "iou_mean"}
        assert recorded == pytest.approx(metrics, abs=1e-6, nan_ok=True)
        assert result["record"]["prompt"] == result["prompt"] and result["record"]["image"]["name"] == image_path.name
        assert result["png"].shape[0] > expected.shape[0]


def compressed_dicom_case() -> tuple[str, str]:
    """A compressed transfer syntax and the message its corrupt frame gets, whatever decoders are installed.

    Without a decoder for the syntax the message names the missing decoder; with every candidate's decoder
    installed (the one our message recommends included), the decoder's failure on the corrupt frame is reported.
    """
    for syntax in (uid.JPEGLSLossless, uid.JPEGLosslessSV1, uid.HTJ2KLossless):
        if not get_decoder(syntax).is_available:
            return syntax, "no decoder is installed"
    return uid.JPEGLSLossless, "could not decode the DICOM pixel data"


def test_bad_inputs_get_messages_and_the_server_keeps_serving(server, tmp_path):
    c = client(server, tmp_path)
    upload = tmp_path / "upload"
    upload.mkdir()
    syntax, compressed_message = compressed_dicom_case()
    bad_images = {
        "random.png": (np.random.default_rng(1).bytes(5000), "not an image this demo reads"),
        "truncated.png": (truncated_png(), "truncated"),
        "multiframe.dcm": (make_dicom(np.zeros((8, 4), np.uint8), NumberOfFrames=2), "multi-frame"),
        "compressed.dcm": (
            make_dicom(
                RAMP_12BIT, bits_stored=12, transfer_syntax=syntax, pixel_data=encapsulate([b"\xff\xd8\xff\xd9"])
            ),
            compressed_message,
        ),
        "rgb.dcm": (
            make_dicom(np.zeros((4, 4, 3), np.uint8), SamplesPerPixel=3, PhotometricInterpretation="RGB"),
            "colour DICOM",
        ),
        "huge.png": (huge_png(), "over the 1 MP limit: downscale it"),
    }
    for name, (data, expected) in bad_images.items():
        (upload / name).write_bytes(data)
        status = c.predict(gradio_client.handle_file(str(upload / name)), api_name="/load_image")[-1]
        assert expected in status and "⚠️" in status, (name, status)
    (upload / "big.png").write_bytes(np.random.default_rng(2).bytes(1_500_000))  # over --max-file-size 1mb
    with pytest.raises(Exception):  # noqa: B017 - the client raises its own error type for a refused upload
        c.predict(gradio_client.handle_file(str(upload / "big.png")), api_name="/load_image")

    assert "Upload an image" in localize(c, server, "mass")[-1]
    c.predict(gradio_client.handle_file(str(EXAMPLES / "phantom_mass.png")), api_name="/load_image")
    for prompts, expected in (("", "Type a finding"), ("a" * 1001, "limit is 1000"), ("肺炎", "Nothing is left")):
        assert expected in localize(c, server, prompts)[-1]
    (upload / "gt.json").write_text("{not json")
    annotations = [gradio_client.handle_file(str(upload / "gt.json"))]
    outputs = c.predict(annotations, None, 0.3, 0.5, "file", api_name="/load_annotations")
    assert "not valid JSON" in outputs[-2]  # the status; the box editor's text comes last
    assert "line 1" in c.predict("1, 2, three, 4", None, 0.3, 0.5, "file", api_name="/set_boxes")[-1]
    with pytest.raises(Exception, match="no example"):
        c.predict(99, api_name="/load_example")

    broken = "user/broken"  # opaque keys: where the model was found and its folder's name, never a server path
    refreshed = c.predict(server["tiny"], api_name="/refresh_models")
    # the chest models among the bundled ones (the page is on chest X-ray); the untrained fallback only without them
    bundled = [
        f"bundled/{p.name}"
        for p in find_model_dirs(BUNDLED_MODELS_DIR)
        if json.loads((p / "preprocessing.json").read_text())["preprocessing"].get("modality", "cxr") == "cxr"
    ]
    assert refreshed["value"] == server["tiny"] and [c[1] for c in refreshed["choices"]] == [
        *bundled,
        broken,
        server["tiny"],
        *([] if bundled else ["untrained"]),
    ]
    outputs = c.predict(broken, api_name="/select_model")
    status, banner = outputs[8], outputs[-1]  # figure, key, shown, metrics, score against, zero-shot x2, notice, ...
    assert "could not load the model in broken" in status and "could not be loaded" in banner
    assert "could not load" in c.predict(broken, "mass", [], None, 0.3, 0.5, "file", api_name="/localize")[-1]

    c.predict(server["tiny"], api_name="/select_model")
    assert localize(c, server, "mass, edema")[-1].startswith("Localized")  # still serving
    figure, _, metrics, *_, status = c.predict("edema", -0.5, 0.3, "file", api_name="/redraw")
    assert Path(figure).is_file() and "No ground truth" in metrics


def test_session_files_are_deleted_when_the_session_ends(server, tmp_path):
    import httpx
    from gradio.utils import get_upload_folder

    c = client(server, tmp_path)
    image = tmp_path / "film.png"
    image.write_bytes((EXAMPLES / "phantom_edema.png").read_bytes())
    loaded = c.predict(gradio_client.handle_file(str(image)), api_name="/load_image")
    localize(c, server, "edema")
    assert c.predict(None, 0.3, 0.5, "file", api_name="/export")[-1].startswith("Exported")
    session_id = "".join(ch for ch in c.session_hash if ch.isalnum())  # the demo's safe folder name
    session_dirs = list(Path(get_upload_folder()).glob(f"afloc-sessions/*/{session_id}"))
    assert len(session_dirs) == 1
    assert list(session_dirs[0].glob("figure-*.png"))  # the film, then its overlay, in the one picture
    assert len(list(session_dirs[0].glob("film__edema__*"))) == 3 and Path(loaded[5]).is_file()  # the exports
    uploads = [p for p in Path(get_upload_folder()).rglob("film.png") if "afloc-sessions" not in p.parts]
    assert uploads == []  # the upload itself was deleted as soon as it was decoded
    # What a browser tab does: hold the heartbeat stream open, then go away (the demo's unload event fires).
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream("GET", f"{server['url']}gradio_api/heartbeat/{c.session_hash}", timeout=2) as stream:
            for _ in stream.iter_lines():
                pass
    for _ in range(50):
        if not session_dirs[0].exists():
            break
        time.sleep(0.1)
    assert not session_dirs[0].exists()
    # and Gradio's own per-session state (config copies of every component) is gone, not kept for an hour
    assert c.session_hash not in server["blocks"].state_holder.session_data


def test_html_in_prompts_is_escaped_in_the_status(server, tmp_path):
    c = client(server, tmp_path)
    c.predict(gradio_client.handle_file(str(EXAMPLES / "phantom_edema.png")), api_name="/load_image")
    html = "<img src=x onerror=alert(1)> [x](http://evil.example) " + "a" * 1000
    status = localize(c, server, html)[-1]
    assert "characters long" in status and "<img" not in status and "](http" not in status


def test_hostile_files_through_the_demo_are_refused_within_two_seconds_and_it_keeps_serving(server, tmp_path):
    """Issue #33: any file under 1 MB is read or refused within 2 s through the demo (decoded in its limited child
    process); afterwards the server still loads an honest image."""
    c, upload = client(server, tmp_path), tmp_path / "hostile"
    upload.mkdir()
    for name, (data, expected) in hostile_image_files().items():
        assert len(data) < 1_000_000, name
        (upload / name).write_bytes(data)
        start = time.perf_counter()
        status = c.predict(gradio_client.handle_file(str(upload / name)), api_name="/load_image")[-1]
        elapsed = time.perf_counter() - start
        assert expected in status and "⚠️" in status, (name, status)
        assert elapsed < 2.0, (name, elapsed)
    status = c.predict(gradio_client.handle_file(str(EXAMPLES / "phantom_mass.png")), api_name="/load_image")[-1]
    assert status.startswith("Loaded"), status
