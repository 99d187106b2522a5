"""The demo in a real headless Chromium (the ``chromium`` on the PATH, as ``.ci/run`` installs it), via Playwright.

A person's path: open the page, load an example, type a prompt, press Localize, wait for the heatmap and the
metrics, move the threshold and see both change; then switch the modality to fundus photos and back, and see the
model, the examples and the presets follow. Skipped when no Chromium is found (CI installs it).
Playwright never downloads its own browser here: it is pointed at the system one.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import free_port, save_synthetic_tiny, without_bundled_models

import afloc
from benchmarks.machine import CHROMIUM_ARGS

pytestmark = pytest.mark.browser


def find_chromium() -> Path | None:
    """The browser ``.ci/run`` installs: any ``chromium`` on the PATH (``command -v chromium``), else Debian's."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return Path(found)
    debian = Path("/usr/bin/chromium")
    return debian if debian.is_file() else None


CHROMIUM = find_chromium()
EXAMPLE = "phantom_pleural_effusion.png"
FUNDUS_EXAMPLE = "phantom_fundus_hard_exudates.png"
PROMPT = "small right pleural effusion"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium on the PATH nor /usr/bin/chromium (apt-get install chromium, as .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        # A persistent context is the only way to give Chromium a fresh --user-data-dir of our own.
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_config, tiny_tokenizer):
    """``app.create`` + launch on a free port with a tiny model directory (as in test_demo_server.py)."""
    import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("models")
    save_synthetic_tiny(models, "tiny", tiny_config, tiny_tokenizer)
    _fit_summaries_on_noise(models / "tiny")
    fundus = afloc.Preprocessing(64, (0.5, 0.3, 0.1), (0.3, 0.2, 0.1), modality="fundus")  # chosen by modality
    save_synthetic_tiny(models, "tiny_fundus", tiny_config, tiny_tokenizer, fundus)
    patch = without_bundled_models(tmp_path_factory.mktemp("no_bundled_models"))  # only the tiny models
    port = free_port()
    argv = ["--models-dir", str(models), "--model", str(models / "tiny"), "--port", str(port)]
    blocks, launch_kwargs, _, _ = app.create(argv)
    blocks.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        blocks.close()
        patch.undo()
        torch.set_num_threads(threads)


def _fit_summaries_on_noise(directory: Path) -> None:
    """Give a model directory a calibration for "mass" and an OOD summary fitted on noise films, so that every
    real example is out of distribution for it (the notice must show)."""
    import numpy as np

    from afloc.hub.format import write_validation_summaries
    from afloc.localization.calibration import FindingCalibration, ZeroShotCalibration
    from afloc.localization.ood import OODSummary, ood_features

    predictor = afloc.AFLocPredictor.from_pretrained(directory, device="cpu")
    rng = np.random.default_rng(0)
    films = [rng.random((64, 64)).astype(np.float32) * 0.2 + 0.4 for _ in range(30)]
    features = torch.stack([ood_features(predictor.encode_image(f).patch_embeddings) for f in films])
    calibration = ZeroShotCalibration({"mass": FindingCalibration(0.5, -1.0)})
    write_validation_summaries(directory, calibration, OODSummary.fit(features, components=4))


def _changed(page, locator, attribute: str | None, before: str) -> str:
    """Wait until the locator's attribute (or inner text when None) differs from ``before``; return it."""

    def current() -> str:
        return locator.get_attribute(attribute) if attribute else locator.inner_text()

    page.wait_for_function(
        "([el, attr, before]) => (attr ? el.getAttribute(attr) : el.innerText) !== before",
        arg=[locator.element_handle(), attribute, before],
        timeout=TIMEOUT_MS,
    )
    return current()


def test_localize_and_move_the_threshold(browser, server, tmp_path):
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    localize = page.get_by_role("button", name="Localize", exact=True)
    localize.wait_for()

    # An example loads the film, its suggested prompt and its ground-truth boxes (then localizes once).
    page.get_by_role("gridcell", name=EXAMPLE).click()
    page.get_by_text("Localized").first.wait_for()  # the example loads, then localizes at once ("Loaded" may flash by)
    heatmap = page.locator("[data-testid=block-label]", has_text="Heatmap").locator("xpath=..").locator("img")
    metrics = page.get_by_text("at threshold")
    heatmap.wait_for()
    metrics.wait_for()
    # the film is unlike what this model's summary was fitted on: the notice says so beside the heatmap, and the
    # findings without a calibration are listed as scores, not probabilities
    page.get_by_text("unlike the images this model was trained on").first.wait_for()
    page.get_by_text("Uncalibrated scores (not probabilities)").first.wait_for()

    # A prompt of our own, then Localize: a new heatmap and metrics for that prompt.
    page.get_by_label("Findings to localize").fill(PROMPT)
    localize.click()
    page.get_by_text(f"for '{PROMPT}' at threshold").wait_for()
    heatmap.wait_for()
    src_before = heatmap.get_attribute("src")
    metrics_before = metrics.inner_text()
    assert src_before and "at threshold 0.3" in metrics_before, metrics_before

    # Move the threshold through its number input (type + Enter, as a person would); the redraw follows.
    number = page.get_by_label("number input for Threshold")
    number.fill("0.05")
    number.press("Enter")
    page.get_by_text(f"for '{PROMPT}' at threshold 0.05").wait_for()
    metrics_after = metrics.inner_text()
    src_after = _changed(page, heatmap, "src", src_before)
    assert metrics_after != metrics_before and "IoU" in metrics_after
    assert src_after and src_after != src_before

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("AFLOC_SCREENSHOT"):
        target = Path(os.environ["AFLOC_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
    page.close()


def test_modality_switch_selects_model_examples_and_presets(browser, server):
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    page.get_by_role("button", name="Localize", exact=True).wait_for()
    page.get_by_role("gridcell", name=EXAMPLE).wait_for()  # chest X-ray examples first
    assert page.get_by_role("gridcell", name=FUNDUS_EXAMPLE).count() == 0

    # Fundus photo: the fundus model is chosen (its preprocessing.json says so), fundus examples are listed
    page.get_by_label("Fundus photo").check()
    page.get_by_text("Model tiny_fundus ready").wait_for()
    page.get_by_role("gridcell", name=FUNDUS_EXAMPLE).wait_for()
    assert page.get_by_role("gridcell", name=EXAMPLE).count() == 0
    page.get_by_role("gridcell", name=FUNDUS_EXAMPLE).click()  # loads the photo and localizes its prompt
    page.get_by_text("Localized 1 prompt(s) with tiny_fundus").wait_for()
    page.get_by_text("at threshold").wait_for()

    # and back: the chest model and examples return
    page.get_by_label("Chest X-ray").check()
    page.get_by_text(re.compile(r"Model (?!tiny_fundus)\S+ ready")).wait_for()  # a chest model (the default one)
    page.get_by_role("gridcell", name=EXAMPLE).wait_for()
    assert page.get_by_role("gridcell", name=FUNDUS_EXAMPLE).count() == 0
    page.close()


@pytest.mark.parametrize("width, height", [(1440, 900), (390, 844)])
def test_the_overlay_is_in_view_after_localize_and_nothing_stays_in_the_browser(browser, server, width, height):
    """Issue #35: after Localize the overlay is inside the viewport on a desktop and a phone; the browser keeps no
    run history (prompts, file names, scores) in its storage."""
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    page.get_by_role("gridcell", name=EXAMPLE).click()
    page.get_by_text("at threshold").first.wait_for()
    page.get_by_label("Findings to localize").fill(PROMPT)
    page.get_by_role("button", name="Localize", exact=True).click()
    page.get_by_text(f"for '{PROMPT}' at threshold").wait_for()
    page.wait_for_timeout(500)  # the scroll after the result
    box = page.locator("#afloc-figure img").bounding_box()
    assert box is not None and box["y"] < height and box["y"] + box["height"] > 0, box  # at least partly in view
    visible = min(box["y"] + box["height"], height) - max(box["y"], 0)
    assert visible >= min(box["height"], height) * 0.5, (box, height)  # most of it
    stored = page.evaluate("() => JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})")
    assert PROMPT not in stored and EXAMPLE not in stored, stored[:300]
    page.close()
