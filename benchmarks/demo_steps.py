"""Benchmark: two of the demo's server-side steps on their own, without HTTP.

* ``decode``: an example film through :class:`demo.decoding.DecodeWorker` (a limited child process; a warmed-up
  spare waits for each upload) against the reader in the calling thread, uploads ``--gap`` seconds apart;
* ``redraw``: :func:`demo.view.render` of one prompt at ten thresholds (what a threshold move costs the server),
  on the example film and on the same film upscaled to 1024 px, with its ground-truth boxes.

Usage::

    python benchmarks/demo_steps.py [--repeats 10] [--gap 0.5] [--model assets/models/afloc_phantomcxr_r10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXAMPLE = ROOT / "assets" / "examples" / "phantom_pleural_effusion.png"


def decode_times(repeats: int, gap: float) -> dict[str, list[float]]:
    from afloc.imaging.io import load_image_with_info
    from demo.decoding import DecodeWorker

    worker = DecodeWorker()
    worker.start()
    time.sleep(3.0)  # the forkserver and the first spare
    times: dict[str, list[float]] = {"decode in a child (spare)": [], "decode in the thread": []}
    for _ in range(repeats):
        start = time.perf_counter()
        worker(EXAMPLE, max_pixels=50_000_000)
        times["decode in a child (spare)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        load_image_with_info(EXAMPLE, max_pixels=50_000_000)
        times["decode in the thread"].append(time.perf_counter() - start)
        time.sleep(gap)
    getattr(worker, "close", lambda: None)()  # (a worker without a spare has nothing to stop)
    return times


def redraw_times(model: str, repeats: int) -> dict[str, list[float]]:
    import numpy as np
    from PIL import Image

    import afloc
    from demo import callbacks as cb
    from demo.models import LoadedModel

    loaded = LoadedModel("model", Path(model).name, afloc.AFLocPredictor.from_pretrained(model), "")
    example = next(e for e in cb.list_examples(ROOT / "assets" / "examples") if e.image_path == EXAMPLE)
    times: dict[str, list[float]] = {}
    for size in (None, 1024):
        session = cb.Session(export_dir=Path(tempfile.mkdtemp(prefix="afloc-steps-")))
        cb.load_example(session, example)
        if size is not None:
            scale = size / session.image.shape[1]
            film = Image.fromarray(np.asarray(cb.to_rgb_uint8(session.image))[..., 0])
            session.image = np.asarray(film.resize((size, round(session.image.shape[0] * scale))))
            session.set_boxes(
                [cb.Box(b.x * scale, b.y * scale, b.w * scale, b.h * scale, b.label) for b in example.boxes]
            )
        cb.localize(session, loaded, example.prompt)
        name = f"redraw at {session.image.shape[1]} px"
        cb.render(session, None, 0.2, 0.5)  # the prompt's upsampled map and threshold-free scores, once
        times[name] = []
        for k in range(repeats):
            start = time.perf_counter()
            cb.render(session, None, 0.1 + 0.4 * k / max(1, repeats - 1), 0.5)
            times[name].append(time.perf_counter() - start)
        session.close()
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between uploads")
    parser.add_argument("--model", default=str(ROOT / "assets" / "models" / "afloc_phantomcxr_r10"))
    args = parser.parse_args(argv)
    times = decode_times(args.repeats, args.gap) | redraw_times(args.model, args.repeats)
    print("| step | median ms | min ms | max ms |\n|---|---|---|---|")
    for name, values in times.items():
        ms = [1000 * v for v in values]
        print(f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} |")


if __name__ == "__main__":
    main()
