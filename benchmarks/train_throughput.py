"""Benchmark: training-step throughput (images/s) of AFLocPretraining, without and with data loading.

* ``step``: forward + backward + Adam step on a fixed in-memory batch (data loading excluded);
* ``loader``: the same steps fed by the real data module (PNG decoding, pad-resize, caption sampling and
  tokenisation in DataLoader workers) from a manifest (data loading included).

CPU (smoke-sized model, the offline MiniLM)::

    python benchmarks/train_throughput.py --manifest CORPUS/manifest.csv

The CPU speed-ups of the phantom recipe, each added to the previous one and measured side by side in one run
(issue #13; ResNet-18 @ 128 px, batch 32, frozen MiniLM, PhantomCXR)::

    python benchmarks/train_throughput.py --manifest data/phantom20k/manifest.csv --image-size 128 --batch 32 \
        --ladder --steps 20

GPU, reference configuration (ResNet-50 at 224 -> 299, BERT-sized text encoder, bf16)::

    python benchmarks/train_throughput.py --device cuda --backbone resnet50 --image-size 224 \\
        --internal-size 299 --batch 64 128 --precision bf16 --manifest CORPUS/manifest.csv
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import ImageReportDataModule  # noqa: E402
from training.system import AFLocPretraining  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to(batch: dict, device: torch.device) -> dict:
    return {
        "images": batch["images"].to(device, non_blocking=True),
        "text": batch["text"].to(device),
        "skipped": batch["skipped"],
        "size": batch["size"],
    }


# The speed-up ladder (--ladder): each row adds one change to the row before; the first row is the recipe the
# bundled model had before issue #13 (frozen MiniLM, fp32, one loader worker).
LADDER = (
    ("before #13: frozen text, fp32, 1 worker", {"freeze_text": True, "workers": 1}),
    ("+ sentence-wise text, cached", {"text_context": "sentence", "cache_text": True}),
    ("+ channels_last", {"channels_last": True}),
    ("+ bf16 autocast", {"precision": "bf16"}),
    ("+ 0 loader workers", {"workers": 0}),
)


def measure(args: argparse.Namespace, batch_size: int, options: dict | None = None) -> dict:
    options = {
        "freeze_text": False,
        "text_context": "caption",
        "cache_text": False,
        "channels_last": False,
        "precision": args.precision,
        "workers": args.workers,
        **(options or {}),
    }
    device = torch.device(args.device)
    torch.manual_seed(0)
    system = AFLocPretraining(
        backbone=args.backbone,
        image_size=args.image_size,
        internal_size=args.internal_size,
        text_model=args.text_model,
        recompute=args.recompute,
        freeze_text=options["freeze_text"],
        text_context=options["text_context"],
        cache_text=options["cache_text"],
        channels_last=options["channels_last"],
    ).to(device)
    system.log = lambda *a, **k: None  # no trainer attached: logging is a no-op here
    optimizer = system.configure_optimizers()["optimizer"]
    data = ImageReportDataModule(
        args.manifest,
        text_model=args.text_model,
        image_size=args.image_size,
        batch_size=batch_size,
        num_workers=options["workers"],
    )
    data.setup("fit")
    loader = data.train_dataloader()
    warm_s = float("nan")
    if options["cache_text"]:  # what fitting does first: every distinct training sentence encoded once
        start = time.perf_counter()
        system.warm_text_cache([s for r in data.datasets["train"].sentences for s in r], data.tokenizer)
        warm_s = time.perf_counter() - start
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=options["precision"] == "bf16")

    def step(batch: dict) -> None:
        with autocast:
            loss = system.training_step(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(system.parameters(), 0.25)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    iterator = iter(loader)
    fixed = _to(next(iterator), device)
    for _ in range(args.warmup):
        step(fixed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        _sync(device)
        start = time.perf_counter()
        step(fixed)
        _sync(device)
        times.append(time.perf_counter() - start)
    step_rate = batch_size / statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    done, start = 0, time.perf_counter()
    iterator = iter(loader)
    for _ in range(args.steps):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        step(_to(batch, device))
        done += batch["images"].shape[0]
    _sync(device)
    loader_rate = done / (time.perf_counter() - start)
    return {
        "batch": batch_size,
        "step_img_s": step_rate,
        "loader_img_s": loader_rate,
        "peak_gib": peak,
        "warm_s": warm_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="a corpus manifest (e.g. PhantomCXR)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--internal-size", type=int, default=None)
    parser.add_argument("--text-model", default=None, help="BERT directory (default: offline MiniLM)")
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--recompute", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ladder", action="store_true", help="the cumulative CPU speed-ups of issue #13")
    args = parser.parse_args(argv)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(
        f"{datetime.date.today()} {platform.platform()} CPUs={os.cpu_count()} torch={torch.__version__} "
        f"device={args.device} ({name}) threads={torch.get_num_threads()} {args.backbone}@{args.image_size} "
        f"internal={args.internal_size} {args.precision} workers={args.workers}, median of {args.steps} steps"
    )
    if args.ladder:
        print("| configuration | step img/s (no loading) | with data loading img/s | vs first row | cache warm-up s |")
        print("|---|---|---|---|---|")
        options: dict = {}
        first = None
        for name, change in LADDER:
            options = {**options, **change}
            r = measure(args, args.batch[0], options)
            first = first or r["loader_img_s"]
            print(
                f"| {name} | {r['step_img_s']:.1f} | {r['loader_img_s']:.1f} | {r['loader_img_s'] / first:.2f}x "
                f"| {r['warm_s']:.0f} |",
                flush=True,
            )
        return
    print("| batch | step img/s (no loading) | with data loading img/s | peak GPU GiB |")
    print("|---|---|---|---|")
    for batch in args.batch:
        r = measure(args, batch)
        print(f"| {r['batch']} | {r['step_img_s']:.1f} | {r['loader_img_s']:.1f} | {r['peak_gib']:.1f} |")


if __name__ == "__main__":
    main()
