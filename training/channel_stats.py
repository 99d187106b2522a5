"""Per-channel mean and std of a corpus's training images, for ``data.mean`` / ``data.std`` (colour photographs).

    python -m training channel-stats --manifest data/fundus12k/manifest.csv [--n 2000] [--split train]
    python -m training channel-stats --manifest data/idrid_corpus/manifest.csv --contrast local --image-size 256

Prints a config overlay (``data: {mean: [...], std: [...]}``). Pixels are the decoded images scaled to [0, 1]
(greyscale counts as three equal channels), all pixels of every sampled image weighted equally, the black
surround of a fundus photograph included (it is part of what the model sees). With ``--contrast local`` the
statistics are those of the images the model sees under ``data.contrast: local``: pad-resized to ``--image-size``
(padding included) and transformed by :func:`afloc.imaging.transforms.local_contrast`.
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np

from afloc.imaging.io import load_image

from .manifest import read_manifest


def channel_stats(
    paths: list[str], transform=None
) -> tuple[tuple[float, float, float], tuple[float, float, float], int]:
    """``(mean, std, images read)`` over the pixels of ``paths`` (each passed through ``transform`` when given);
    unreadable images are skipped."""
    total, total_sq, count, read = np.zeros(3), np.zeros(3), 0, 0
    for path in paths:
        try:
            image = load_image(path)
        except ValueError:
            continue
        if transform is not None:
            image = transform(image)
        pixels = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
        pixels = pixels.reshape(-1, 3).astype(np.float64)
        total += pixels.sum(axis=0)
        total_sq += (pixels**2).sum(axis=0)
        count += pixels.shape[0]
        read += 1
    if read == 0:
        raise ValueError("no readable image among the sampled records")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std), read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training channel-stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--n", type=int, default=2000, help="images sampled (seeded), all when fewer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contrast", choices=("none", "local"), default="none")
    parser.add_argument("--image-size", type=int, default=256, help="the model's input side (with --contrast)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    try:
        records = read_manifest(args.manifest, split=args.split)
        if not records:
            raise ValueError(f"{args.manifest} has no '{args.split}' records")
        chosen = random.Random(args.seed).sample(records, min(args.n, len(records)))
        transform = None
        if args.contrast != "none":
            from afloc.imaging.transforms import Preprocessing

            seen = Preprocessing(args.image_size, modality="fundus", contrast=args.contrast)
            transform = lambda image: seen.model_space_image(image)[0]  # noqa: E731
        mean, std, read = channel_stats([r.image for r in chosen], transform)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"# {read} '{args.split}' images of {args.manifest}")
    print(f"data:\n  mean: [{', '.join(map(str, mean))}]\n  std: [{', '.join(map(str, std))}]")
    return 0
