"""``python -m training lung-field``: train the lung-field gate (:mod:`afloc.localization.lung_field`) on
PhantomCXR films only, whose lung outlines are known by construction. No real film takes part.

    python -m training lung-field --out runs/lung_field --minutes 14

Every step draws a batch of synthetic films and changes how they look (rotation, scale, shift, blur, gamma,
shading, noise; the border filled with a random grey) before the field's own input rule (grey, resized,
histogram-equalised), so that what it learns is the lungs' shape, not the phantoms' grey levels. The target is
the visible lung (the retrocardiac lung behind the heart excluded, as on an expert's lung mask). Loss: binary
cross-entropy plus soft Dice. One thread, seeded: the same command gives the same weights on one machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from afloc.commands import command
from afloc.localization.lung_field import LungField, LungFieldNet, prepare


def phantom_films(n: int, seed: int, side: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """``n`` PhantomCXR films ``[n, side, side]`` in [0, 1] and their visible-lung masks (float 0/1)."""
    from training.phantoms.generate import CorpusSpec, generate_case
    from training.phantoms.render import render_case_with_anatomy

    spec = CorpusSpec(n=n, size=side, seed=seed)
    films, lungs = [], []
    for index in range(n):
        case, _, _ = generate_case(index, spec)
        film, anatomy = render_case_with_anatomy(case, side, np.random.default_rng([seed, index]))
        films.append(film.astype(np.float32))
        lungs.append((anatomy.lung["right"] | anatomy.lung["left"]).astype(np.float32))
    return np.stack(films), np.stack(lungs)


def disguise(film: np.ndarray, lung: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One film and its mask moved and re-exposed at random (the same move for both)."""
    import cv2

    side = film.shape[0]
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-10, 10), rng.uniform(0.8, 1.25))
    matrix[:, 2] += rng.uniform(-0.1, 0.1, 2) * side
    film = cv2.warpAffine(film, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=float(rng.uniform(0, 1)))
    lung = cv2.warpAffine(lung, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=0.0)
    if rng.random() < 0.7:
        film = cv2.GaussianBlur(film, (0, 0), rng.uniform(0.3, 2.0) * side / 128)
    film = np.clip(film, 0.0, 1.0) ** np.exp(rng.uniform(-0.6, 0.6))
    rows, columns = np.mgrid[0:side, 0:side] / side
    film = film + rng.uniform(-0.2, 0.2) * (columns - 0.5) + rng.uniform(-0.2, 0.2) * (rows - 0.5)
    film = film + rng.normal(0.0, rng.uniform(0.0, 0.05), film.shape)
    return np.clip(film, 0.0, 1.0).astype(np.float32), lung


def train_lung_field(
    out: str | Path,
    minutes: float = 14.0,
    samples: int = 3000,
    seed: int = 11,
    size: int = 128,
    width: int = 16,
    batch_size: int = 16,
    max_steps: int | None = None,
    log=print,
) -> LungField:
    """Train a lung field for ``minutes`` (or ``max_steps``) on ``samples`` phantom films and save it in ``out``."""
    import cv2

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    start = time.time()
    films, lungs = phantom_films(samples, seed)
    log(f"{samples} phantom films in {time.time() - start:.0f} s")
    net = LungFieldNet(width).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    step = 0
    while (max_steps is None or step < max_steps) and time.time() - start < minutes * 60:
        inputs, targets = [], []
        for index in rng.integers(0, samples, batch_size):
            film, lung = disguise(films[index], lungs[index], rng)
            inputs.append(prepare(film, size))
            targets.append(cv2.resize(lung, (size, size), interpolation=cv2.INTER_AREA))
        x = torch.from_numpy(np.stack(inputs))[:, None]
        y = torch.from_numpy(np.stack(targets))[:, None]
        logits = net(x)
        probabilities = torch.sigmoid(logits)
        dice = (2 * (probabilities * y).sum() + 1) / (probabilities.sum() + y.sum() + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + 1 - dice
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 100 == 0:
            log(f"step {step} {time.time() - start:.0f} s loss {loss.item():.4f}")
    field = LungField(net.eval(), size, width)
    field.save(out)
    log(f"wrote {out} after {step} steps")
    return field


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training lung-field", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for lung_field.safetensors and lung_field.json")
    parser.add_argument("--minutes", type=float, default=14.0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--samples", type=int, default=3000, help="phantom films drawn once, re-disguised per step")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.samples < 1:
        raise ValueError("--minutes must be > 0 and --samples >= 1")
    train_lung_field(args.out, args.minutes, args.samples, args.seed, max_steps=args.max_steps)
    return 0
