"""Benchmark: evaluation throughput (samples/s) of the localization protocol on PhantomCXR test images.

A ResNet-50 + MiniLM model (random image weights: speed does not depend on training) is scored with the
reference protocol (224 maps, IoU/Dice sweep, CNR, pointing game, threshold-tuning grid) on the first N test
samples of a PhantomCXR corpus; images are loaded in DataLoader workers and encoded in batches.

    python benchmarks/eval_throughput.py --corpus data/phantom20k --n 1000 [--device cuda] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import AFLocConfig, AFLocPredictor, ImageEncoderConfig, build_model, load_tokenizer, save_pretrained  # noqa: E402
from training.evaluation.datasets import read_phantom  # noqa: E402
from training.evaluation.protocol import HeatmapSource, ProtocolConfig, evaluate_localization  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="PhantomCXR corpus folder")
    parser.add_argument("--n", type=int, default=1000, help="test samples")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backbone", default="resnet50")
    args = parser.parse_args(argv)
    samples = read_phantom(args.corpus, split="test").samples[: args.n]
    torch.manual_seed(0)
    model = build_model(AFLocConfig(image=ImageEncoderConfig(backbone=args.backbone)))
    with tempfile.TemporaryDirectory() as tmp:  # through a saved directory, as a user would
        save_pretrained(model, tmp, load_tokenizer())
        predictor = AFLocPredictor.from_pretrained(tmp, device=args.device)
    source = HeatmapSource(predictor=predictor)
    start = time.perf_counter()
    records, _ = evaluate_localization(samples, source, ProtocolConfig(), args.batch_size, args.workers)
    elapsed = time.perf_counter() - start
    images = len({r["image"] for r in records})
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"{datetime.date.today()} {platform.platform()} CPUs={os.cpu_count()} torch={torch.__version__} "
        f"device={args.device} ({name}) {args.backbone}, batch {args.batch_size}, workers {args.workers}"
    )
    print(
        f"{len(records)} samples on {images} images in {elapsed:.1f} s: {len(records) / elapsed:.1f} samples/s, "
        f"{images / elapsed:.1f} images/s"
    )


if __name__ == "__main__":
    main()
