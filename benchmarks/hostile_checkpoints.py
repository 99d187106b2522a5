"""Time and extra memory of the safe checkpoint reader on crafted files of under 1 MB (issue #14).

Each file is built with the generators of ``tests/test_checkpoint_hardening.py`` and read in a fresh
subprocess (``load_checkpoint`` + ``materialize``); reported: file size, outcome (the error type, or "loaded"),
wall time, and the rise of the peak resident set size over the read (``ru_maxrss`` after imports).
Target: every file refused or loaded within 2 s, with under 200 MB of extra memory.

Usage::

    python benchmarks/hostile_checkpoints.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_checkpoint_hardening import (  # noqa: E402
    PROTO,
    dag_pickle,
    get,
    glob,
    put,
    state_dict_pickle,
    tensor_record,
    text,
    write_zip,
)

PROBE = r"""
import json, resource, sys, time
from afloc.convert.safe_pickle import load_checkpoint
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    with load_checkpoint(sys.argv[1]) as checkpoint:
        checkpoint.materialize(checkpoint.data)
    outcome = "loaded"
except ValueError as error:
    outcome = type(error).__name__
seconds = time.perf_counter() - start
extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"outcome": outcome, "seconds": round(seconds, 3), "extra_mib": round(extra, 1)}))
"""


def cases(folder: Path) -> dict[str, Path]:
    numel = 64 << 20  # 256 MiB of float32 zeros behind a deflated entry
    top = get(90)
    return {
        "BUILD on the shared FloatStorage marker": write_zip(
            folder / "poison.pt",
            PROTO + glob("torch", "FloatStorage") + b"}" + text("dtype") + glob("torch", "int8") + b"sb.",
        ),  # fmt: skip
        "memo DAG (2**90 leaves) fed to str": write_zip(
            folder / "dag_str.pt", PROTO + dag_pickle(90) + glob("builtins", "str") + b"(" + top + b"tR."
        ),
        "memo DAG as a dict key": write_zip(
            folder / "dag_key.pt", PROTO + dag_pickle(90) + b"}" + top + b"\x85K\x01s."
        ),
        "memo DAG of plain data, 60 levels": write_zip(folder / "dag_data.pt", PROTO + dag_pickle(60) + b"."),
        "100,000 nested MARKs": write_zip(folder / "marks.pt", PROTO + b"(" * 100_000 + b"."),
        "opcode loop (500k NONE/POP)": write_zip(folder / "loop.pt", PROTO + b"N0" * 500_000 + b"N."),
        "memo flood (80k entries)": write_zip(
            folder / "memo.pt", PROTO + b"N" + b"".join(put(i) for i in range(80_000)) + b"."
        ),  # fmt: skip
        "1,001 placeholder classes": write_zip(
            folder / "classes.pt", PROTO + b"".join(glob("m", f"C{i}") + b"0" for i in range(1001)) + b"N."
        ),
        "deflated data.pkl of 66 MiB": write_zip(
            folder / "pkl.pt", PROTO + b"N0" * (33 << 20) + b"N.", deflate=("data.pkl",)
        ),  # fmt: skip
        "deflated storage of 256 MiB": write_zip(
            folder / "bomb.pt",
            state_dict_pickle(("w", tensor_record("0", numel, (numel,), (1,)))),
            {"0": bytes(numel * 4)},
            deflate=("0",),
        ),  # fmt: skip
        "stride-0 view: 100M elements of 4 bytes": write_zip(
            folder / "views.pt", state_dict_pickle(("w", tensor_record("0", 1, (100_000_000,), (0,)))), {"0": bytes(4)}
        ),  # fmt: skip
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, path in cases(Path(folder)).items():
            probe = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, cwd=ROOT)
            result = json.loads(probe.stdout.strip().splitlines()[-1])
            rows.append({"case": name, "bytes": path.stat().st_size, **result})
            print(f"| {name} | {path.stat().st_size:,} | {result['outcome']} | {result['seconds']:.2f} | "
                  f"{result['extra_mib']:.0f} |", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
