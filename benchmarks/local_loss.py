"""Benchmark: vectorised ``afloc.modeling.losses.local_contrastive_loss`` vs a per-caption loop like the reference.

Both methods compute the same local (region <-> token) loss of docs/method.md section 2, forward + backward
(gradients w.r.t. the patch and token embeddings):

* ``vectorised``: :func:`afloc.modeling.losses.local_contrastive_loss` (batched einsums over all B x B pairs, optional
  text chunking / activation recomputation).
* ``reference``: the same loop with the reference code's memory habits (words repeated per image,
  ``.contiguous()`` copies after every transpose): the baseline the issue names.
* ``loop``: a lean per-caption loop: for each caption ``i``, take its valid tokens and
  compute against ALL images at once (``bmm`` attention ``[B_img, N, T_i]``, softmax over tokens, softmax over
  regions, context ``bmm``, cosine, log-sum-exp) giving row ``i`` of ``R``; then stack the rows and take the
  symmetric cross-entropy. It follows the same dtype policy as the vectorised code (matrix products in the
  input dtype, softmaxes / cosine / log-sum-exp in float32), so only the structure differs.

Each method runs in fresh subprocesses (same seeded inputs), so that its peak memory is measured alone;
a tiny forward+backward runs first so that one-off buffers (thread pools, CUDA context) are not counted:

* CUDA: ``torch.cuda.max_memory_allocated()`` minus the memory allocated before the first full-size forward
  (inputs excluded), over the timed run: the peak of live tensors, caching-allocator overhead not included.
* CPU: a separate process per method runs one forward+backward with ``MALLOC_MMAP_THRESHOLD_=65536`` (so
  glibc unmaps freed blocks instead of keeping them, and RSS follows the live tensors; the timing runs keep
  the default allocator) and reports the increase of its peak resident set size
  (``getrusage(RUSAGE_SELF).ru_maxrss``) across that pass. An OS-level number: it includes allocator
  overhead and page rounding, not the inputs; the noise floor is about 1 MiB.

Also reported: the bytes autograd keeps for the backward pass (distinct saved storages, inputs excluded),
which is deterministic and the same on every device.

Time is the median over ``--repeats`` timed forward+backward passes after ``--warmup`` untimed ones.

Examples::

    python benchmarks/local_loss.py --batch 3 --dim 8 --grid 3 --tokens 4 --repeats 2   # smoke test
    python benchmarks/local_loss.py                                                     # CPU defaults
    python benchmarks/local_loss.py --device cuda --dtype bfloat16 --batch 64 --dim 768 --grid 38 --tokens 97
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from afloc.modeling.losses import local_contrastive_loss  # noqa: E402
from benchmarks.loop_losses import GAMMA1, GAMMA2, GAMMA3, per_caption_loop_loss, reference_style_loop_loss  # noqa: E402
from benchmarks.machine import cpu_name  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def make_inputs(args: argparse.Namespace, device: torch.device):
    """Seeded inputs, identical in every subprocess; caption lengths vary in [1, T], caption 0 has T."""
    generator = torch.Generator().manual_seed(0)
    dim, batch, length = args.dim, args.batch, args.tokens
    scale = dim**-0.25  # raw region . token dot products ~ N(0, 1)
    patches = scale * torch.randn(batch, dim, args.grid, args.grid, generator=generator)
    tokens = scale * torch.randn(batch, length, dim, generator=generator)
    lengths = torch.randint(max(1, length // 2), length + 1, (batch,), generator=generator)
    lengths[0] = length
    if batch > 1:
        lengths[1] = 1
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
    dtype = DTYPES[args.dtype]
    patches = patches.to(device=device, dtype=dtype).requires_grad_(True)
    tokens = tokens.to(device=device, dtype=dtype).requires_grad_(True)
    return patches, tokens, mask.to(device)


# ------------------------------------------------------------------------------------------------------------
# Worker (one method per fresh process)
# ------------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_worker(args: argparse.Namespace) -> dict:
    """Runs one method in this fresh process: ``--mode time`` times it, ``--mode memory`` (CPU) peak RSS."""
    device = torch.device(args.device)

    def step(patches, tokens, mask):
        if args.worker == "vectorised":
            return local_contrastive_loss(
                patches, tokens, mask, GAMMA1, GAMMA2, GAMMA3, text_chunk_size=args.chunk, recompute=args.recompute
            )
        if args.worker == "reference":
            return reference_style_loop_loss(patches, tokens, mask)
        return per_caption_loop_loss(patches, tokens, mask)

    # One pass on tiny inputs first, so that one-off buffers (thread pools, kernel libraries, CUDA context)
    # are not counted as the method's memory.
    tiny = argparse.Namespace(**{**vars(args), "batch": 2, "grid": 2, "tokens": 2})
    tiny_inputs = make_inputs(tiny, device)
    torch.autograd.grad(step(*tiny_inputs), tiny_inputs[:2])
    del tiny_inputs

    patches, tokens, mask = make_inputs(args, device)
    _sync(device)
    if args.mode == "memory":  # CPU only: one forward + backward, peak RSS increase
        base = _peak_rss_bytes()
        grads = torch.autograd.grad(step(patches, tokens, mask), (patches, tokens))
        del grads
        return {"method": args.worker, "peak_bytes": _peak_rss_bytes() - base}

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    loss_value = None
    for k in range(args.warmup + args.repeats):
        _sync(device)
        start = time.perf_counter()
        loss = step(patches, tokens, mask)
        grads = torch.autograd.grad(loss, (patches, tokens))
        _sync(device)
        elapsed = time.perf_counter() - start
        if k == 0:
            loss_value = float(loss)
            if args.grad_file:
                torch.save([g.float().cpu() for g in grads], args.grad_file)
        if k >= args.warmup:
            times.append(elapsed)
        del loss, grads

    result = {
        "method": args.worker,
        "median_s": statistics.median(times),
        "times_s": times,
        "loss": loss_value,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        result["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
        result["device_name"] = torch.cuda.get_device_name(device)
    else:
        result["device_name"] = cpu_name()
    result["saved_bytes"] = _saved_for_backward_bytes(lambda: step(patches, tokens, mask), {patches, tokens})
    return result


def _saved_for_backward_bytes(forward, inputs) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass (inputs excluded).

    Deterministic and device-independent; with ``recompute=True`` only what is kept outside the checkpoints
    counts (the checkpointed activations are recomputed, not stored).
    """
    excluded = {x.untyped_storage().data_ptr() for x in inputs}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = forward()
    del loss
    return sum(storages.values())


# ------------------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------------------


def _spawn(args: argparse.Namespace, method: str, mode: str, grad_file: str | None = None) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--mode",
        mode,
        "--batch",
        str(args.batch),
        "--dim",
        str(args.dim),
        "--grid",
        str(args.grid),
        "--tokens",
        str(args.tokens),
        "--dtype",
        args.dtype,
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
    ]
    if grad_file:
        command += ["--grad-file", grad_file]
    if args.chunk is not None:
        command += ["--chunk", str(args.chunk)]
    if args.recompute:
        command.append("--recompute")
    env = dict(os.environ)
    if mode == "memory":
        # A fixed mmap threshold turns off glibc's dynamic threshold: every block >= 64 KiB is mmap'ed and
        # unmapped on free, so the resident set follows the live tensors instead of keeping freed heap pages.
        env["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"worker {method!r} ({mode}) failed with exit code {result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _mib(num_bytes: float) -> float:
    return num_bytes / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="image-text pairs B")
    parser.add_argument("--dim", type=int, default=128, help="embedding width D")
    parser.add_argument("--grid", type=int, default=14, help="region grid side (N = grid^2 regions)")
    parser.add_argument("--tokens", type=int, default=24, help="max tokens per caption T")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward+backward passes")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    parser.add_argument("--chunk", type=int, default=None, help="text_chunk_size of the vectorised loss")
    parser.add_argument("--recompute", action="store_true", help="recompute=True for the vectorised loss")
    parser.add_argument("--worker", choices=["vectorised", "loop", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--grad-file", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["time", "memory"], default="time", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch, args.dim, args.grid, args.tokens, args.repeats) < 1 or args.warmup < 0:
        parser.error("sizes and --repeats must be >= 1, --warmup >= 0")

    if args.worker:
        print(json.dumps(run_worker(args)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        grads = {}
        for method in ("vectorised", "loop", "reference"):
            grad_file = os.path.join(tmp, f"{method}.pt")
            results[method] = _spawn(args, method, "time", grad_file)
            grads[method] = torch.load(grad_file)
            if torch.device(args.device).type == "cuda":
                results[method]["memory_measure"] = "cuda max_memory_allocated - inputs"
            else:
                results[method]["peak_bytes"] = _spawn(args, method, "memory")["peak_bytes"]
                results[method]["memory_measure"] = "peak RSS increase (ru_maxrss, fixed mmap threshold)"
    vec, loop, reference = results["vectorised"], results["loop"], results["reference"]
    loss_diff = max(abs(vec["loss"] - r["loss"]) for r in (loop, reference))
    grad_diff = max(
        float((a - b).abs().max())
        for other in ("loop", "reference")
        for a, b in zip(grads["vectorised"], grads[other], strict=True)
    )
    grad_scale = max(float(g.abs().max()) for g in grads["loop"])

    n = args.grid**2
    print(
        f"local loss fwd+bwd: B={args.batch} D={args.dim} N={args.grid}x{args.grid}={n} T<={args.tokens} "
        f"{args.dtype} on {args.device} ({vec['device_name']}, {vec['threads']} torch threads), "
        f"chunk={args.chunk} recompute={args.recompute}, "
        f"median of {args.repeats} after {args.warmup} warm-up"
    )
    for name, r in (("vectorised", vec), ("loop", loop), ("reference", reference)):
        times = ", ".join(f"{1e3 * t:.1f}" for t in r["times_s"])
        print(
            f"  {name:>10}: median {1e3 * r['median_s']:9.1f} ms   peak {_mib(r['peak_bytes']):9.1f} MiB   "
            f"saved for backward {_mib(r['saved_bytes']):9.2f} MiB   loss {r['loss']:.6f}   "
            f"(times ms: {times})"
        )
    time_ratio = loop["median_s"] / vec["median_s"]
    mem_ratio = loop["peak_bytes"] / vec["peak_bytes"] if vec["peak_bytes"] > 0 else float("nan")
    saved_ratio = loop["saved_bytes"] / vec["saved_bytes"] if vec["saved_bytes"] > 0 else float("nan")
    print(
        f"  loop/vectorised: time x{time_ratio:.2f}, peak memory x{mem_ratio:.2f}, "
        f"saved for backward x{saved_ratio:.2f}"
    )
    ref_time_ratio = reference["median_s"] / vec["median_s"]
    ref_mem_ratio = reference["peak_bytes"] / vec["peak_bytes"] if vec["peak_bytes"] > 0 else float("nan")
    print(
        f"  reference/vectorised: time x{ref_time_ratio:.2f}, peak memory x{ref_mem_ratio:.2f}, "
        f"saved for backward x{reference['saved_bytes'] / max(vec['saved_bytes'], 1):.2f}"
    )
    print(f"  max |loss diff| = {loss_diff:.3e}; max |grad diff| = {grad_diff:.3e} (max |grad| {grad_scale:.3e})")
    print(f"  memory = {vec['memory_measure']}")
    print()

    header = (
        "| date | platform | CPUs | torch | device | dtype | B | D | N | T | chunk | recompute | "
        "vectorised ms | loop ms | time loop/vec | vectorised MiB | loop MiB | mem loop/vec | "
        "memory measure | saved MiB vec / loop | max abs loss diff | reference ms | reference MiB | "
        "time ref/vec | mem ref/vec |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    row = [
        datetime.date.today().isoformat(),
        platform.platform(),
        str(os.cpu_count()),
        torch.__version__,
        vec["device_name"],
        args.dtype,
        str(args.batch),
        str(args.dim),
        f"{args.grid}x{args.grid}",
        str(args.tokens),
        str(args.chunk),
        str(args.recompute),
        f"{1e3 * vec['median_s']:.1f}",
        f"{1e3 * loop['median_s']:.1f}",
        f"{time_ratio:.2f}",
        f"{_mib(vec['peak_bytes']):.1f}",
        f"{_mib(loop['peak_bytes']):.1f}",
        f"{mem_ratio:.2f}",
        vec["memory_measure"],
        f"{_mib(vec['saved_bytes']):.2f} / {_mib(loop['saved_bytes']):.2f}",
        f"{loss_diff:.2e}",
        f"{1e3 * reference['median_s']:.1f}",
        f"{_mib(reference['peak_bytes']):.1f}",
        f"{ref_time_ratio:.2f}",
        f"{ref_mem_ratio:.2f}",
    ]
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
