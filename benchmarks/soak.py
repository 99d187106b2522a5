"""Soak test of the demo: N clients for M minutes of mixed actions against a local server (issue #14).

Starts ``python app.py`` in a subprocess on a free port of 127.0.0.1 only (default model, a fresh Gradio cache
folder so that files left behind can be counted), then runs ``--clients`` threads until ``--minutes`` have
passed. Each client repeatedly opens a session (a ``gradio_client.Client``), does a random mix of actions and
leaves (``Client.close()``, which ends the session's heartbeat, as closing a tab does):

* good inputs: upload a film (an example PNG made unique per upload), load an example, localize 1-3 prompts,
  redraw at a new threshold, set boxes, export;
* bad inputs: a truncated PNG, an EPS file, a deflate-bomb DICOM, a 400-digit box, a box of 1e12 pixels, a
  100,000-deep JSON annotation file, an HTML prompt.

An *error* is a call that raises (HTTP error, timeout), an "Unexpected error" status, or a good input that gets
a warning. Bad inputs must get a warning. Reported: errors, p50/p95 latency per action, the server's resident
memory (RSS) sampled every 5 s, and the files left in the Gradio cache once every client has left.

Usage::

    python benchmarks/soak.py --clients 8 --minutes 10 [--json soak.json]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_name, free_port  # noqa: E402

EXAMPLES = sorted((ROOT / "assets" / "examples").glob("*.png"))
PROMPTS = ["left pleural effusion", "right upper lobe mass", "cardiomegaly", "pulmonary edema", "pneumothorax",
           "small right basal opacity", "consolidation in the left lower lobe", "atelectasis"]  # fmt: skip
HTML_PROMPT = '<img src=x onerror="alert(1)"> [link](http://evil.example) effusion'


def _unique_png(path: Path, token: str) -> bytes:
    """The example with a text chunk: the same pixels, different bytes (real users upload different films)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("soak", token)
    buffer = io.BytesIO()
    Image.open(path).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _bad_files(folder: Path) -> dict[str, Path]:
    good = (EXAMPLES[0]).read_bytes()
    files = {
        "truncated.png": good[: len(good) // 2],
        "figure.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n%%EOF\n",
        "deep.json": b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    }
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = uid.ComputedRadiographyImageStorage, "1.2.3"
    meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, meta.MediaStorageSOPClassUID, "1.2.3"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 16, 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(64 << 20)  # declared 8 KiB, inflates to 64 MiB
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    files["bomb.dcm"] = buffer.getvalue()
    paths = {}
    for name, data in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


class Recorder:
    """Latencies per action, errors, and what bad inputs got."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.refused = 0

    def call(self, action: str, fn, expect_warning: bool = False, status_index: int = -1):
        start = time.perf_counter()
        try:
            result = fn()
        except Exception as error:  # a crash, HTTP error or timeout: always an error
            with self.lock:
                self.errors.append(f"{action}: {type(error).__name__}: {str(error)[:200]}")
            return None
        elapsed = time.perf_counter() - start
        status = result[status_index] if isinstance(result, tuple) and len(result) > abs(status_index) else ""
        status = status if isinstance(status, str) else ""
        with self.lock:
            self.latency.setdefault(action, []).append(elapsed)
            warned = status.startswith("**⚠️")
            if "Unexpected error" in status or warned != expect_warning:
                self.errors.append(f"{action}: status {status[:200]!r}")
            elif expect_warning:
                self.refused += 1
        return result


def client_loop(url: str, deadline: float, rec: Recorder, bad: dict[str, Path], workdir: Path, seed: int) -> int:
    from gradio_client import Client, handle_file

    rng = random.Random(seed)
    visits = 0
    while time.monotonic() < deadline:
        visits += 1
        client = Client(url, verbose=False, analytics_enabled=False, download_files=str(workdir))
        try:
            model = client.predict(None, api_name="/refresh_models")["value"]

            def run(action, *args, api, expect_warning=False, client=client):
                job = client.submit(*args, api_name=api)
                index = -2 if api == "/load_annotations" else -1  # its outputs end with the box editor's text
                return rec.call(action, lambda: tuple(job.result(timeout=300)), expect_warning, index)

            upload = workdir / f"film_{seed}_{visits}.png"
            upload.write_bytes(_unique_png(rng.choice(EXAMPLES), f"{seed}-{visits}-{rng.random()}"))

            shown = {"modality": "cxr"}

            def load(model, client=client, upload=upload, shown=shown):
                """Upload the film; a colour photo switches the session to fundus, whose model list differs:
                take the model the page would now show, as a browser does."""
                result = run("load", handle_file(str(upload)), model, api="/load_image")
                if result and result[1] in ("cxr", "fundus"):
                    shown["modality"] = result[1]
                    return client.predict(None, result[1], api_name="/refresh_models")["value"]
                return model

            model = load(model)
            has_heatmap = False  # export needs one: without it the (correct) answer is a warning
            for _ in range(rng.randint(3, 8)):
                if time.monotonic() > deadline:
                    break
                action = rng.choice(["localize", "localize", "redraw", "redraw", "boxes", "export", "example",
                                     "bad"])  # fmt: skip
                if action == "export" and not has_heatmap:
                    action = "localize"
                if action == "localize":
                    has_heatmap = True
                    prompts = ", ".join(rng.sample(PROMPTS, rng.randint(1, 3)))
                    run("localize", model, prompts, [], None, rng.random() * 0.6, 0.5, "file", api="/localize")
                elif action == "redraw":
                    run("redraw", None, round(rng.uniform(-0.5, 0.8), 2), 0.5, "file", api="/redraw")
                elif action == "boxes":
                    run("boxes", f"{rng.randint(0, 50)}, {rng.randint(0, 50)}, 60, 80, effusion", None, 0.3, 0.5,
                        "file", api="/set_boxes")  # fmt: skip
                elif action == "export":
                    run("export", None, 0.3, 0.5, "file", api="/export")
                elif action == "example":
                    # the examples listed for the page's modality (3 or more of each)
                    run("example", rng.randrange(3), shown["modality"], api="/load_example")
                    has_heatmap = False  # its suggested prompt is localized by a chained event
                else:
                    kind = rng.choice(["truncated.png", "figure.eps", "bomb.dcm", "deep.json", "digits", "huge box",
                                       "html"])  # fmt: skip
                    if kind in ("truncated.png", "figure.eps", "bomb.dcm"):
                        run(f"bad {kind}", handle_file(str(bad[kind])), model, api="/load_image",
                            expect_warning=True)  # fmt: skip
                        model = load(model)
                        has_heatmap = False
                    elif kind == "deep.json":
                        run("bad deep.json", [handle_file(str(bad[kind]))], None, 0.3, 0.5, "file",
                            api="/load_annotations", expect_warning=True)  # fmt: skip
                    elif kind == "digits":
                        run("bad digits", "1" * 400 + ", 1, 10, 10", None, 0.3, 0.5, "file", api="/set_boxes",
                            expect_warning=True)  # fmt: skip
                    elif kind == "huge box":
                        run("bad huge box", "-1e12, -1e12, 2e12, 2e12", None, 0.3, 0.5, "file", api="/set_boxes",
                            expect_warning=True)  # fmt: skip
                    else:
                        run("bad html prompt", model, HTML_PROMPT + " " + "x" * 1000, [], None, 0.3, 0.5,
                            "file", api="/localize", expect_warning=True)  # fmt: skip
        except Exception as error:
            with rec.lock:
                rec.errors.append(f"session: {type(error).__name__}: {str(error)[:200]}")
        finally:
            client.close()
            upload.unlink(missing_ok=True)
    return visits


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--heartbeat", type=float, default=2.0, help="Gradio heartbeat interval (s) for the server")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.clients < 1 or not 0 < args.minutes <= 120:
        parser.error("--clients must be >= 1 and --minutes in (0, 120]")
    work = Path(tempfile.mkdtemp(prefix="afloc-soak-"))
    cache, client_dir = work / "gradio-cache", work / "clients"
    cache.mkdir()
    client_dir.mkdir()
    bad = _bad_files(work)
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(cache), "GRADIO_HEARTBEAT_INTERVAL": str(args.heartbeat),
           "GRADIO_ANALYTICS_ENABLED": "False"}  # fmt: skip
    log = (work / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit("the server did not start; see " + str(work / "server.log"))
        rss = [(0.0, rss_mib(server.pid))]
        rec = Recorder()
        start = time.monotonic()
        deadline = start + 60 * args.minutes
        stop = threading.Event()

        def sample():
            while not stop.wait(5):
                rss.append((time.monotonic() - start, rss_mib(server.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        visits = [0] * args.clients

        def worker(k):
            visits[k] = client_loop(url, deadline, rec, bad, client_dir, seed=k)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ran_s = time.monotonic() - start
        # the server notices the closed heartbeats, runs the unload events and, a minute later, the last sweep of
        # uploads that no event consumed (demo.session.ORPHAN_UPLOAD_AGE_S)
        time.sleep(3 * args.heartbeat + 20 + 75)
        stop.set()
        rss.append((time.monotonic() - start, rss_mib(server.pid)))
        left = files_in(cache)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    calls = sum(len(v) for v in rec.latency.values())
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "clients": args.clients,
        "minutes_requested": args.minutes,
        "seconds_run": round(ran_s, 1),
        "sessions": sum(visits),
        "calls": calls,
        "errors": len(rec.errors),
        "error_samples": rec.errors[:10],
        "bad_inputs_refused_with_a_message": rec.refused,
        "latency_ms": {
            action: {"n": len(v), "p50": round(1000 * statistics.median(v)), "p95": round(1000 * np.quantile(v, 0.95))}
            for action, v in sorted(rec.latency.items())
        },
        "rss_mib": {"start": round(rss[0][1]), "max": round(max(r for _, r in rss)), "end": round(rss[-1][1])},
        "rss_series": [(round(t), round(r)) for t, r in rss[:: max(1, len(rss) // 20)]],
        "files_left": len(left),
        "files_left_samples": [str(p.relative_to(cache)) for p in left[:10]],
        "server_alive_at_end": alive,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
