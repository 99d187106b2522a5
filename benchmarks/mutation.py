"""Mutation score of the core modules: how many small, realistic bugs the tests that claim a module catch.

    python benchmarks/mutation.py [--modules losses metrics ...] [--sample 40] [--seed 0] [--workdir DIR]
                                  [--max-children 2] [--json results.json]

Runs `mutmut <https://pypi.org/project/mutmut/>`_ 3 (``pip install mutmut==3.8.1``; not a CI dependency) once
per core module, on a **private copy** of the checkout (mutmut writes a mutated tree; the working tree is never
touched): only that module is mutated, and only the test files mapped to it in :data:`MODULES` are run (mutmut
then runs, for each mutant, just the tests that call the mutated function). ``--sample N`` draws a seeded random
subset of N mutants per module (all of them when there are fewer); ``--sample 0`` runs every mutant.

Score = killed / (tested - equivalent). Timeouts count as killed (the mutant changed behaviour); mutants in a
function no mapped test calls ("no tests") count as survivors. :data:`EQUIVALENT` lists survivors judged
equivalent (no observable behaviour changes), with the reason; mutant numbers are tied to the source text, so
the list is only valid for the commit it was written against (a stale entry is reported, not silently used).

The shared data folder (``../shared``) is linked next to the copy, so tests that read it run as they do in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module name -> (source file, test files that cover it). Behaviour tests (tests/test_behaviour_*.py) written
# against independent expectations are mapped to the modules whose bugs they catch.
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "losses": ("afloc/modeling/losses.py", ("tests/test_losses.py", "tests/test_behaviour_training.py")),
    "metrics": ("afloc/localization/metrics.py", ("tests/test_metrics.py",)),
    "transforms": ("afloc/imaging/transforms.py", ("tests/test_transforms.py", "tests/test_behaviour_geometry.py")),
    "localization": (
        "afloc/localization/heatmaps.py",
        ("tests/test_localization.py", "tests/test_behaviour_heatmaps.py"),
    ),
    "predictor": ("afloc/predictor.py", ("tests/test_predictor.py", "tests/test_behaviour_heatmaps.py")),
    "text": ("afloc/text/tokenizer.py", ("tests/test_text.py",)),
    "io": ("afloc/imaging/io.py", ("tests/test_io.py", "tests/test_io_hardening.py")),
    "protocol": (
        "training/evaluation/protocol.py",
        ("tests/test_evaluation.py", "tests/test_behaviour_heatmaps.py"),
    ),
    "report": ("training/evaluation/report.py", ("tests/test_eval_report.py",)),
    # issue #30: the evaluation readers and the demo's callbacks and annotation parsing
    "readers": (
        "training/evaluation/datasets/base.py",
        ("tests/test_readers.py", "tests/test_realdata_reports.py", "tests/test_properties.py", "tests/test_slips.py"),
    ),
    "readers_cxr_masks": (
        "training/evaluation/datasets/cxr_masks.py",
        ("tests/test_readers.py", "tests/test_realdata_reports.py", "tests/test_slips.py"),
    ),
    "readers_cxr": (
        "training/evaluation/datasets/cxr.py",
        ("tests/test_readers.py", "tests/test_properties.py", "tests/test_slips.py"),
    ),
    "readers_fundus": ("training/evaluation/datasets/fundus.py", ("tests/test_readers.py",)),
    "demo_callbacks": (
        "demo/callbacks.py",
        ("tests/test_demo_callbacks.py", "tests/test_behaviour_demo.py", "tests/test_slips.py"),
    ),
    "demo_annotations": (
        "demo/annotations.py",
        ("tests/test_demo_callbacks.py", "tests/test_demo_hardening.py", "tests/test_slips.py"),
    ),
}

# Surviving mutants judged equivalent: {mutant name: one-line reason}. Filled from the survivors' diffs
# (2026-11-30, session 5); a name stays valid while its function's source is unchanged. Session 11 changed
# heatmaps_from_embeddings and AFLocPredictor.embed_prompts, so their entries were dropped: their survivors are
# reported as survivors until the next mutation run judges them again.
EQUIVALENT: dict[str, str] = {
    "afloc.localization.metrics.x__float_map__mutmut_4": "integer maps stay integer; every metric casts to float64 before "
    "arithmetic (var(dtype=float64), astype), so the scores are identical",
    "afloc.localization.metrics.x__float_map__mutmut_5": "np.issubdtype(None, floating) is True (dtype(None) is float64): "
    "same as mutant 4",
    "afloc.localization.metrics.x__overlap_scores__mutmut_13": "numpy treats any negative size in reshape as the unknown "
    "one: reshape(-2) == reshape(-1)",
    "afloc.localization.metrics.x_bootstrap_ci__mutmut_10": 'float("NAN") is NaN',
    "afloc.localization.metrics.x_localization_metrics__mutmut_63": "astype(None) is astype(float64)",
    "afloc.imaging.transforms.xǁPadResizeMappingǁpoints_to_original__mutmut_11": "reshape(-2, 2) == reshape(-1, 2) in numpy",
    "afloc.imaging.io.x__pillow_to_array__mutmut_58": "without the 'L' branch a greyscale image goes RGB -> channel "
    "spread 0 -> the mean of three equal channels: the same values and bit depth",
    "afloc.imaging.io.x__pillow_to_array__mutmut_59": "same as mutant 58",
    "afloc.imaging.io.x__pillow_to_array__mutmut_90": "the channel spread of uint8 values is the same in float64 as in int16",
    "afloc.localization.heatmaps.x_apply_margin__mutmut_10": "heatmaps are square S x S: shape[-2] == shape[-1] in the message",
    "afloc.localization.heatmaps.x_apply_margin__mutmut_13": "assigning None to a float array stores NaN",
    "afloc.modeling.losses.x_local_contrastive_loss__mutmut_67": "torch.arange(device=None) is the CPU, where the mask "
    "is: the same on the CPU machines this benchmark runs on (a GPU run would catch it)",
    "afloc.text.tokenizer.x_split_sentences__mutmut_11": "the word pattern and the list-marker pattern treat newlines as "
    "whitespace already",
    "afloc.text.tokenizer.x_split_sentences__mutmut_13": "the same for carriage returns",
    "afloc.text.tokenizer.x_split_sentences__mutmut_26": "codec names are case-insensitive: 'ASCII' is 'ascii'",
    "afloc.text.tokenizer.x_word_and_sentence_ids__mutmut_7": "every tokenized text holds [CLS] and [SEP], so valid[:, 1] "
    "== valid[:, 0]",
    "afloc.text.tokenizer.x_word_and_sentence_ids__mutmut_31": "cumsum + is_period differs from cumsum - is_period only on "
    "'.' tokens, which belong to no sentence",
    "afloc.text.tokenizer.x_word_and_sentence_ids__mutmut_36": "sentence numbers are renumbered densely afterwards, so the "
    "offset (1 or 2) cancels",
    "afloc.text.tokenizer.x_resolve_text_model__mutmut_13": "only hub ids reach the else branch, and str(Path(id)"
    ".expanduser()) == id for the 'org/name' ids the pattern admits",
    "afloc.predictor.xǁAFLocPredictorǁfrom_bundle__mutmut_5": "device None picks the CPU on a machine without a "
    "GPU, as 'cpu' does (a GPU run would catch it)",
    "training.evaluation.protocol.xǁHeatmapSourceǁencode__mutmut_9": "both lists come from one batch of the "
    "encoder, so the lengths always match",
    "training.evaluation.report.x_grouped_bars__mutmut_26": "a list of floats and NaN becomes float64 with "
    "dtype=None too",
    "training.evaluation.report.x_summarize_classification__mutmut_54": "the AUCs are floats (NaN when "
    "undefined): dtype=None gives float64 too",
    "training.evaluation.report.x_write_outputs__mutmut_64": "json.dumps escapes non-ASCII by default, so the "
    "text is ASCII and the encoding cannot matter",
}

KILLED, SURVIVED, NO_TESTS, TIMEOUT, OTHER = "killed", "survived", "no tests", "timeout", "other"
_IGNORE_ANYWHERE = shutil.ignore_patterns(".git", "mutants", "*.egg-info", "__pycache__", ".ruff_cache")
_IGNORE_AT_TOP = {"runs", "data"}  # generated corpora and runs; tests/data (the test vocabulary) must be copied


def copy_ignore(directory: str, names: list[str]) -> set[str]:
    """``shutil.copytree`` filter: caches everywhere, the checkout's own ``data/`` and ``runs/`` only at its top."""
    ignored = set(_IGNORE_ANYWHERE(directory, names))
    if Path(directory).resolve() == ROOT:
        ignored |= _IGNORE_AT_TOP & set(names)
    return ignored


NO_MATCH = "__mutation_benchmark_lists_mutants__"


def status_of(exit_code: int | None) -> str:
    """mutmut's exit-code convention (``mutmut.stats.status_by_exit_code``) folded into five outcomes."""
    if exit_code in (1, 3):
        return KILLED
    if exit_code == 0:
        return SURVIVED
    if exit_code in (5, 33):
        return NO_TESTS
    if exit_code in (36, 24, -24, 152, 255):
        return TIMEOUT
    return OTHER


def mutmut_command() -> list[str]:
    found = shutil.which("mutmut") or str(Path(sys.executable).with_name("mutmut"))
    if not Path(found).is_file():
        raise SystemExit("mutmut is not installed: pip install mutmut==3.8.1")
    return [found]


def prepare_copy(workdir: Path, source: str, tests: list[str]) -> Path:
    """A fresh copy of the checkout with a ``[tool.mutmut]`` section for one module."""
    if workdir.exists():
        shutil.rmtree(workdir)
    repo = workdir / "repo"
    shutil.copytree(ROOT, repo, ignore=copy_ignore, symlinks=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (workdir / "shared").symlink_to(shared)  # tests find ../shared/data as in CI
    config = {
        "source_paths": ["afloc", "training", "demo"],
        "only_mutate": [source],
        "also_copy": ["app.py", "benchmarks", "assets", "README.md", "docs", "requirements.txt"],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-x"],
        "process_isolation": "fork",
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    with (repo / "pyproject.toml").open("a") as handle:
        handle.write("\n".join(lines) + "\n")
    return repo


def run_module(name: str, args: argparse.Namespace) -> dict:
    source, mapped = MODULES[name]
    tests = [t for t in mapped if (ROOT / t).is_file() and not (args.without_behaviour and "behaviour" in t)]
    repo = prepare_copy(args.workdir / name, source, tests)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    # one thread: forked workers must not inherit a busy OpenMP pool (seen as spurious CPU-time "timeouts")
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    command = mutmut_command()
    started = time.perf_counter()
    log = (args.workdir / f"{name}.log").open("w")
    # 1) generate every mutant and collect which test calls which function; the no-match filter then stops it
    subprocess.run(
        [*command, "run", "--max-children", str(args.max_children), NO_MATCH],
        cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, check=False,
    )  # fmt: skip
    meta = repo / "mutants" / f"{source}.meta"
    if not meta.is_file():
        raise RuntimeError(f"{name}: mutmut generated no mutants (see {args.workdir / f'{name}.log'})")
    names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
    chosen = (
        names
        if not args.sample or args.sample >= len(names)
        else sorted(random.Random(f"{args.seed}:{name}").sample(names, args.sample))
    )
    # 2) run the chosen mutants
    subprocess.run(
        [*command, "run", "--max-children", str(args.max_children), *chosen],
        cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, check=False,
    )  # fmt: skip
    log.close()
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    outcomes = {mutant: status_of(codes.get(mutant)) for mutant in chosen}
    survivors = [m for m, s in outcomes.items() if s in (SURVIVED, NO_TESTS, OTHER)]
    diffs = {}
    for mutant in survivors:
        shown = subprocess.run([*command, "show", mutant], cwd=repo, env=env, capture_output=True, text=True)
        diffs[mutant] = shown.stdout.strip()
    equivalent = [m for m in survivors if m in EQUIVALENT]
    counts = {s: sum(v == s for v in outcomes.values()) for s in (KILLED, TIMEOUT, SURVIVED, NO_TESTS, OTHER)}
    detected = counts[KILLED] + counts[TIMEOUT]
    denominator = len(chosen) - len(equivalent)
    return {
        "module": name,
        "source": source,
        "tests": tests,
        "mutants_total": len(names),
        "sampled": len(chosen),
        "counts": counts,
        "equivalent": {m: EQUIVALENT[m] for m in equivalent},
        "score": detected / denominator if denominator else float("nan"),
        "survivors": {m: diffs[m] for m in survivors if m not in EQUIVALENT},
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", choices=sorted(MODULES), default=list(MODULES))
    parser.add_argument("--sample", type=int, default=40, help="mutants per module (seeded); 0 = all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/afloc-mutation"), help="private copies go here")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument(
        "--without-behaviour", action="store_true", help="leave out tests/test_behaviour_*.py (the 'before' score)"
    )
    parser.add_argument("--json", type=Path, help="write the per-module results (survivor diffs included)")
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()
    if args.workdir == ROOT or ROOT in args.workdir.parents:
        parser.error("--workdir must be outside the checkout (mutmut writes a mutated copy there)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"{'module':<13} {'mutants':>7} {'sampled':>7} {'killed':>6} {'timeout':>7} {'survived':>8} "
          f"{'no tests':>8} {'equiv.':>6} {'score':>6} {'s':>6}")  # fmt: skip
    for name in args.modules:
        result = run_module(name, args)
        results.append(result)
        c = result["counts"]
        print(
            f"{name:<13} {result['mutants_total']:>7} {result['sampled']:>7} {c['killed']:>6} {c['timeout']:>7} "
            f"{c['survived']:>8} {c['no tests'] + c['other']:>8} {len(result['equivalent']):>6} "
            f"{result['score']:>6.0%} {result['seconds']:>6.0f}",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
