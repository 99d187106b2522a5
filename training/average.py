"""``python -m training average --out AVG.ckpt CKPT [CKPT ...]``: the mean of several checkpoints' weights.

Checkpoints saved along one run (``periodic-step=*.ckpt``, ``last.ckpt``) are averaged into one checkpoint that
``python -m training export`` and ``evaluate`` read like any other (weight averaging, as in stochastic weight
averaging; an option, not in the reference). ``--run DIR --last N`` takes the N checkpoints of a run's checkpoint
folder with the highest training steps instead of a list.

- Every floating-point tensor that differs between the checkpoints is averaged in float32 and stored in its own
  dtype; BatchNorm running statistics are averaged like the weights.
- Tensors that are identical in every checkpoint (a frozen text encoder) are copied bit for bit, so that an
  ``--external-text`` export still recognises them as unchanged.
- Integer tensors (BatchNorm's batch counters) and everything outside the weights (hyper-parameters, step,
  epoch) come from the checkpoint with the highest step. The averaged sources are recorded under
  ``averaged_from`` (file name and step) and named in an exported model's card.
- Checkpoints whose weights do not have the same names, shapes and dtypes are refused, naming the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from afloc.commands import command


def _load(path: Path, mmap: bool = False) -> dict:
    """A checkpoint read safely; ``mmap`` maps the tensors instead of reading them (for its step alone)."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # a corrupt or hostile file: weights_only refuses code, say which file
        raise ValueError(f"checkpoint {path} could not be read safely: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("state_dict"), dict):
        raise ValueError(f"{path} is not a Lightning checkpoint of `python -m training fit` (no state_dict)")
    return raw


def run_checkpoints(run: str | Path, last: int) -> list[Path]:
    """The ``last`` checkpoints of a run's folder (``*.ckpt`` anywhere below it) with the highest steps.

    Files holding the same step (``last.ckpt`` beside the best checkpoint of the same step) count once.
    """
    if last < 1:
        raise ValueError(f"--last must be at least 1, got {last}")
    files = sorted(Path(run).rglob("*.ckpt"))
    if not files:
        raise ValueError(f"no checkpoint (*.ckpt) under {run}")
    by_step: dict[int, Path] = {}
    for path in files:
        step = int(_load(path, mmap=True).get("global_step", -1))
        by_step.setdefault(step, path)
    steps = sorted(by_step)[-last:]
    if len(steps) < last:
        raise ValueError(f"{run} holds checkpoints of {len(by_step)} distinct steps, fewer than --last {last}")
    return [by_step[s] for s in steps]


def average_checkpoints(paths: list[str | Path]) -> dict:
    """The averaged checkpoint (a dict for ``torch.save``), see the module docstring."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError("averaging needs at least two checkpoints")
    raws = [_load(p) for p in paths]
    newest = max(range(len(raws)), key=lambda i: int(raws[i].get("global_step", -1)))
    base = raws[newest]
    reference = base["state_dict"]
    for path, raw in zip(paths, raws, strict=True):
        state = raw["state_dict"]
        if state.keys() != reference.keys():
            extra = sorted(set(state) ^ set(reference))[:3]
            raise ValueError(f"{path} does not hold the same weights as {paths[newest]} (e.g. {extra})")
        for key, value in state.items():
            if value.shape != reference[key].shape or value.dtype != reference[key].dtype:
                raise ValueError(f"{path}: {key} is {tuple(value.shape)} {value.dtype}, expected "
                                 f"{tuple(reference[key].shape)} {reference[key].dtype}")  # fmt: skip
    averaged = {}
    for key, value in reference.items():
        tensors = [raw["state_dict"][key] for raw in raws]
        if value.is_floating_point() and not all(torch.equal(t, value) for t in tensors):
            mean = torch.stack([t.float() for t in tensors]).mean(dim=0)
            averaged[key] = mean.to(value.dtype)
        else:
            averaged[key] = value.clone()
    out = dict(base)
    out["state_dict"] = averaged
    steps = [int(raw.get("global_step", -1)) for raw in raws]
    out["averaged_from"] = [f"{path.name} (step {step})" for path, step in zip(paths, steps, strict=True)]
    return out


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training average", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", help="checkpoints of one run")
    parser.add_argument("--run", default=None, help="a run's folder: average its --last N checkpoints")
    parser.add_argument("--last", type=int, default=None, help="with --run: how many of the newest checkpoints")
    parser.add_argument("--out", required=True, help="the averaged checkpoint to write (.ckpt)")
    args = parser.parse_args(argv)
    if args.run is not None:
        if args.checkpoints or args.last is None:
            raise ValueError("give either checkpoints or --run DIR --last N")
        paths = run_checkpoints(args.run, args.last)
    else:
        if args.last is not None:
            raise ValueError("--last needs --run")
        paths = [Path(p) for p in args.checkpoints]
    out = Path(args.out)
    if out.resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"--out {out} is one of the checkpoints being averaged")
    averaged = average_checkpoints(paths)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(averaged, out)
    print(f"averaged {len(paths)} checkpoints -> {out}: " + ", ".join(averaged["averaged_from"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
