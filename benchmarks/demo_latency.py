"""Benchmark: end-to-end latency of the Gradio demo, measured through ``gradio_client`` over HTTP.

Starts the app in this process on a free localhost port (``app.create``, default model: the first bundled
model, else the untrained fallback), or talks to a running one with ``--url``. Median over repeats of:

* ``upload to heatmap``: upload an example film + ``/load_image`` + ``/localize`` with one prompt
  (target <= 1 s);
* ``new prompt``: ``/localize`` with a prompt not seen before, on the same session (target <= 150 ms);
* ``threshold move``: ``/redraw`` of the shown prompt at a new threshold (target <= 100 ms).

Each includes what a browser also pays: the HTTP round trips, the queue, and fetching the rendered figure.

Two clients measure the same steps on the same server, one after the other:

* ``gradio_client`` (what the issue names). It reads the server's event stream in a thread and polls the
  messages it received with ``time.sleep(0.05)`` (``gradio_client/utils.py``), so each call pays up to 50 ms
  per message it waits for on top of the server's time;
* ``browser protocol``: the same HTTP requests the demo's web page makes (``POST /gradio_api/queue/join``, the
  ``GET /gradio_api/queue/data`` event stream read as it arrives, then ``GET`` of the figure file), with
  ``httpx`` and no polling: what a user in a browser waits for, minus the page's own painting.

Usage::

    python benchmarks/demo_latency.py [--repeats 10] [--url http://127.0.0.1:7860/] [--threads N]
    python benchmarks/demo_latency.py --screenshot docs/figures/demo_screenshot.png   # also a Chromium screenshot
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import CHROMIUM_ARGS, cpu_name, free_port  # noqa: E402

EXAMPLE = ROOT / "assets" / "examples" / "phantom_pleural_effusion.png"
PROMPT_WORDS = ["left", "right", "lower", "upper", "pleural", "effusion", "opacity", "basal", "small", "large"]
TARGETS_MS = {"upload to heatmap": 1000, "new prompt": 150, "threshold move": 100}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(url: str, repeats: int, workdir: Path) -> tuple[str, dict[str, list[float]]]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, analytics_enabled=False, download_files=str(workdir))
    model_key = client.predict(None, api_name="/refresh_models")["value"]  # the dropdown's first model
    upload = handle_file(str(EXAMPLE))
    prompt = "small right pleural effusion"

    def localize(prompts: str):
        status = client.predict(model_key, prompts, [], None, 0.3, 0.5, "file", api_name="/localize")[-1]
        assert status.startswith("Localized"), status

    def upload_to_heatmap():
        status = client.predict(upload, api_name="/load_image")[-1]
        assert status.startswith("Loaded"), status
        localize(prompt)

    for _ in range(2):  # warm-up: model load, first-call overheads, thread pools
        upload_to_heatmap()
        localize("warm up prompt")
        client.predict(prompt, 0.2, 0.5, "file", api_name="/redraw")
    samples: dict[str, list[float]] = {name: [] for name in TARGETS_MS}
    for _ in range(repeats):
        samples["upload to heatmap"].append(_timed(upload_to_heatmap))
    for k in range(repeats):
        words = " ".join(PROMPT_WORDS[(k + j) % len(PROMPT_WORDS)] for j in range(3))
        samples["new prompt"].append(_timed(lambda words=words, k=k: localize(f"{words} number {k}")))
    localize(prompt)
    for k in range(repeats):
        threshold = round(0.1 + 0.4 * k / max(1, repeats - 1), 2)
        samples["threshold move"].append(
            _timed(lambda t=threshold: client.predict(prompt, t, 0.5, "file", api_name="/redraw"))
        )
    return model_key, samples


class BrowserProtocol:
    """The demo's web-page protocol over plain HTTP: upload, queue join, event stream, figure download."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=60)
        self.session_hash = uuid.uuid4().hex[:11]
        config = self.http.get(f"{self.url}/config").raise_for_status().json()
        state_ids = {c["id"] for c in config["components"] if c.get("type") == "state"}
        self.endpoints = {
            dep["api_name"]: (dep["id"], [cid in state_ids for cid in dep["inputs"]])
            for dep in config["dependencies"]
            if dep.get("api_name")
        }

    def upload(self, path: Path) -> dict:
        with path.open("rb") as handle:
            response = self.http.post(f"{self.url}/gradio_api/upload", files={"files": (path.name, handle)})
        server_path = response.raise_for_status().json()[0]
        return {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def predict(self, api_name: str, *args) -> list:
        """Run ``api_name`` with ``args`` for the non-state inputs; return its outputs, figures fetched."""
        fn_index, is_state = self.endpoints[api_name]
        values = iter(args)
        data = [None if state else next(values) for state in is_state]
        body = {"data": data, "fn_index": fn_index, "session_hash": self.session_hash, "event_data": None}
        event_id = self.http.post(f"{self.url}/gradio_api/queue/join", json=body).raise_for_status().json()["event_id"]
        stream_url = f"{self.url}/gradio_api/queue/data"
        with self.http.stream("GET", stream_url, params={"session_hash": self.session_hash}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    break
        if not message.get("success", False):
            raise RuntimeError(f"{api_name} failed: {message.get('output')}")
        outputs = message["output"]["data"]
        for value in outputs:  # the page fetches every image it shows
            if isinstance(value, dict) and value.get("url"):
                self.http.get(value["url"]).raise_for_status()
        return outputs

    def close(self) -> None:
        self.http.close()


def measure_browser_protocol(url: str, repeats: int, model_key: str) -> dict[str, list[float]]:
    """The same three steps as :func:`measure`, through :class:`BrowserProtocol`."""
    client = BrowserProtocol(url)
    prompt = "small right pleural effusion"

    def localize(prompts: str) -> None:
        status = client.predict("localize", model_key, prompts, [], None, 0.3, 0.5, "file")[-1]
        assert "Localized" in json.dumps(status), status

    def upload_to_heatmap() -> None:
        status = client.predict("load_image", client.upload(EXAMPLE), model_key)[-1]
        assert "Loaded" in json.dumps(status), status
        localize(prompt)

    try:
        for _ in range(2):
            upload_to_heatmap()
            localize("warm up prompt")
            client.predict("redraw", prompt, 0.2, 0.5, "file")
        samples: dict[str, list[float]] = {name: [] for name in TARGETS_MS}
        for _ in range(repeats):
            samples["upload to heatmap"].append(_timed(upload_to_heatmap))
        for k in range(repeats):
            words = " ".join(PROMPT_WORDS[(k + 5 + j) % len(PROMPT_WORDS)] for j in range(3))
            samples["new prompt"].append(_timed(lambda words=words, k=k: localize(f"{words} item {k}")))
        localize(prompt)
        for k in range(repeats):
            threshold = round(0.12 + 0.4 * k / max(1, repeats - 1), 2)
            samples["threshold move"].append(
                _timed(lambda t=threshold: client.predict("redraw", prompt, t, 0.5, "file"))
            )
    finally:
        client.close()
    return samples


def screenshot(url: str, path: Path, width: int = 1440, height: int = 900) -> None:
    """Open the demo in Debian's Chromium at ``width x height``, click the pleural-effusion example, press Localize
    and save the viewport as the user sees it after Localize (the page scrolls the overlay into view)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path="/usr/bin/chromium",
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.get_by_role("gridcell", name=EXAMPLE.name).click()
        page.get_by_text("Localized").first.wait_for()
        page.get_by_text("at threshold").wait_for()
        page.get_by_role("button", name="Localize", exact=True).click()  # as a user would, after the example
        page.wait_for_timeout(1500)  # the result, its scroll into view, and the image painted
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=False)
        context.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--url", help="a running demo (default: start one in this process)")
    parser.add_argument("--model", help="model directory for the in-process app (default: app.py's default)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--screenshot", type=Path, help="also save a Chromium screenshot (1440x900) of an example here")
    parser.add_argument("--screenshot-phone", type=Path, help="and one at a phone's 390x844 here")
    args = parser.parse_args(argv)

    blocks = None
    url = args.url
    if url is None:
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        import app

        port = free_port()
        blocks, launch_kwargs, store, default = app.create(
            ["--port", str(port)] + (["--model", args.model] if args.model else [])
        )
        blocks.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}/"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            model_key, samples = measure(url, args.repeats, Path(workdir))
        browser = measure_browser_protocol(url, args.repeats, model_key)
        if args.screenshot:
            screenshot(url, args.screenshot)
        if args.screenshot_phone:
            screenshot(url, args.screenshot_phone, 390, 844)
    finally:
        if blocks is not None:
            blocks.close()

    import torch

    where = "in-process" if args.url is None else args.url
    print(
        f"{datetime.date.today()} {platform.platform()} {cpu_name()} CPUs={os.cpu_count()} "
        f"torch={torch.__version__} threads={torch.get_num_threads()} app={where} "
        f"model={Path(model_key).name if model_key != 'untrained' else 'untrained'}, median of {args.repeats}"
    )
    print("| step | client | median ms | min ms | max ms | target ms |")
    print("|---|---|---|---|---|---|")
    for name in TARGETS_MS:
        for client, values in (("gradio_client", samples[name]), ("browser protocol", browser[name])):
            median, target = 1e3 * statistics.median(values), TARGETS_MS[name]
            verdict = f"<= {target} ({'met' if median <= target else 'missed'})"
            print(
                f"| {name} | {client} | {median:.1f} | {1e3 * min(values):.1f} | {1e3 * max(values):.1f} | {verdict} |"
            )
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
