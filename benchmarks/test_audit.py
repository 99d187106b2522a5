"""Planted-bug audit: would the tests notice the slips a refactor introduces? (issue #30)

Each plant is one small semantic slip of a class a user would feel (a setting that never reaches the output,
geometry on non-square inputs, DICOM value semantics, a metric's sign or convention, converter shape inference),
written as an exact text replacement in one file. For each plant the checkout is copied (``data/`` and ``runs/``
left out, ``../shared`` linked beside the copy as in CI), the slip is applied, and the tests that cover that file
run (``pytest -x``). A plant is *killed* when they fail, *survived* when they pass::

    python benchmarks/test_audit.py                  # every plant
    python benchmarks/test_audit.py --only G3 D1     # some plants
    python benchmarks/test_audit.py --list           # the plants, without running anything
    python benchmarks/test_audit.py --tests-from 586319c   # the suite of an older commit (a "before" score)

Prints one line per plant and the killed / planted count per class; ``--json FILE`` writes the results. Mutmut
(``benchmarks/mutation.py``) flips operators and constants; these are the slips it does not make.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {
    "S": "a setting that never reaches the output",
    "G": "geometry on non-square inputs",
    "D": "DICOM value semantics",
    "M": "metric sign or convention",
    "C": "converter shape inference",
}


@dataclass(frozen=True)
class Plant:
    """One slip: replace ``old`` (which must occur exactly once) by ``new`` in ``path``; run ``tests``."""

    id: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


P = Plant
PLANTS: tuple[Plant, ...] = (
    # --- S: a user's setting accepted, shown, and ignored in one path
    P("S1", "demo/callbacks.py", "        opacity=opacity,\n        threshold=threshold,",
      "        opacity=0.5,\n        threshold=threshold,",
      ("tests/test_demo_callbacks.py", "tests/test_behaviour_demo.py"), "demo overlay ignores the opacity slider"),
    P("S2", "demo/callbacks.py", "boxes_to_mask(scored, *heatmap.shape), threshold)",
      "boxes_to_mask(scored, *heatmap.shape), 0.3)",
      ("tests/test_demo_callbacks.py", "tests/test_behaviour_demo.py"), "demo metrics at 0.3 whatever the threshold"),
    P("S3", "demo/callbacks.py", '        "opacity": view.opacity,', '        "opacity": 0.5,',
      ("tests/test_demo_callbacks.py", "tests/test_behaviour_demo.py"), "exported JSON records the default opacity"),
    P("S4", "afloc/__main__.py", "                opacity=args.opacity,", "                opacity=0.5,",
      ("tests/test_localize_cli.py", "tests/test_behaviour_localize_cli.py"), "afloc-localize ignores --opacity"),
    P("S5", "training/evaluation/evaluate.py",
      '        "smoothing_sigma": args.smoothing_sigma,',
      '        "smoothing_sigma": None,',
      ("tests/test_evaluation.py",), "evaluate --smoothing-sigma accepted and ignored"),
    P("S6", "training/callbacks.py", "LocalizationConfig(smoothing_sigma=smoothing_sigma, similarity=similarity)",
      "LocalizationConfig(similarity=similarity)",
      ("tests/test_localization_monitor.py",), "the monitor's smoothing never reaches its heatmaps"),
    P("S7", "training/data.py", 'augmentation=self.augmentation if split == "train" else None,',
      "augmentation=None,", ("tests/test_realdata_training.py",), "--data.augment accepted and never applied"),
    P("S8", "demo/annotations.py", "    return [checked_box((b.x * sx, b.y * sy, b.w * sx, b.h * sy), b.label, \"scaled box\") for b in boxes]",
      "    return boxes", ("tests/test_slips.py", "tests/test_demo_callbacks.py", "tests/test_behaviour_geometry.py"),
      "annotations of a differently sized image are not rescaled"),
    # --- G: width/height, x/y, rows/columns
    P("G1", "afloc/imaging/transforms.py", "(size - new_h) // 2, (size - new_w) // 2)", "(size - new_w) // 2, (size - new_h) // 2)",
      ("tests/test_slips.py", "tests/test_transforms.py", "tests/test_behaviour_geometry.py"), "pad offsets swapped"),
    P("G2", "afloc/imaging/transforms.py", "        target = (self.original_width, self.original_height)",
      "        target = (self.original_height, self.original_width)",
      ("tests/test_slips.py", "tests/test_transforms.py", "tests/test_behaviour_geometry.py"), "heatmap back to (H, W) swapped"),
    P("G3", "afloc/imaging/transforms.py",
      "mask.astype(np.uint8), (self.resized_width, self.resized_height), interpolation=cv2.INTER_NEAREST_EXACT",
      "mask.astype(np.uint8), (self.resized_height, self.resized_width), interpolation=cv2.INTER_NEAREST_EXACT",
      ("tests/test_slips.py", "tests/test_transforms.py", "tests/test_behaviour_geometry.py"), "mask to model space swapped"),
    P("G4", "afloc/imaging/boxes.py",
      "Box((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)",
      "Box((cx - w / 2) * height, (cy - h / 2) * width, w * height, h * width)",
      ("tests/test_slips.py", "tests/test_readers.py", "tests/test_realdata_reports.py"), "YOLO reader scales x by the height"),
    P("G5", "training/evaluation/datasets/base.py", "            row0, row1 = pixel_span(y, h, height)",
      "            row0, row1 = pixel_span(y, h, width)", ("tests/test_slips.py", "tests/test_readers.py",), "box rows clipped to the width"),
    P("G6", "training/evaluation/datasets/base.py", "    return height, width\n\n\ndef read_mask_file",
      "    return width, height\n\n\ndef read_mask_file", ("tests/test_slips.py", "tests/test_readers.py",), "image size read as (W, H)"),
    P("G7", "demo/annotations.py",
      "    height, width = shape\n    for number, line in enumerate(lines, start=1):",
      "    width, height = shape\n    for number, line in enumerate(lines, start=1):",
      ("tests/test_slips.py", "tests/test_demo_callbacks.py", "tests/test_behaviour_geometry.py"), "demo YOLO upload x/y scaled wrongly"),
    P("G8", "demo/annotations.py", "        sx, sy = shape[1] / float(size[0]), shape[0] / float(size[1])",
      "        sx, sy = shape[0] / float(size[0]), shape[1] / float(size[1])",
      ("tests/test_slips.py", "tests/test_demo_callbacks.py", "tests/test_behaviour_geometry.py"), "demo box rescale with H/W swapped"),
    P("G9", "afloc/localization/overlay.py", "    image_width = canvas.shape[1]", "    image_width = canvas.shape[0]",
      ("tests/test_slips.py", "tests/test_visualize.py"), "box labels placed against the image height"),
    P("G10", "training/realdata/fundus.py", '    eye = "right" if disc[0] > width / 2 else "left"',
      '    eye = "right" if disc[0] > height / 2 else "left"', ("tests/test_slips.py", "tests/test_realdata_reports.py",),
      "the eye from the disc compared with the height"),
    P("G11", "training/realdata/cxr_reports.py", '    side = "right" if cx < width / 2 else "left"',
      '    side = "right" if cy < height / 2 else "left"', ("tests/test_slips.py", "tests/test_realdata_reports.py",),
      "a TB box's side read off its row"),
    # --- D: header fields that change pixel values
    P("D1", "afloc/imaging/io.py", "        image = 1.0 - image\n", "        image = image\n", ("tests/test_slips.py", "tests/test_io.py",),
      "MONOCHROME1 not inverted"),
    P("D2", "afloc/imaging/io.py", "        signed = int(ds.get(\"PixelRepresentation\") or 0) == 1",
      "        signed = False", ("tests/test_slips.py", "tests/test_io.py",), "signed storage read as unsigned"),
    P("D3", "afloc/imaging/io.py",
      "        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)",
      "        low, high = low + float(intercept), high + float(intercept)", ("tests/test_slips.py", "tests/test_io.py",),
      "rescale slope left out of the output range"),
    P("D4", "afloc/imaging/io.py", '        low, high = -(2.0 ** (bits_stored - 1)), 2.0 ** (bits_stored - 1) - 1',
      '        low, high = 0.0, 2.0**bits_stored - 1', ("tests/test_slips.py", "tests/test_io.py",), "signed range taken as unsigned"),
    P("D5", "training/evaluation/datasets/base.py", "        return int(dataset.Rows), int(dataset.Columns)",
      "        return int(dataset.Columns), int(dataset.Rows)", ("tests/test_slips.py", "tests/test_readers.py",),
      "DICOM size read as Columns x Rows"),
    # --- M: metric sign or convention
    P("M1", "afloc/localization/metrics.py", "    return abs(value) if absolute else value", "    return abs(value)",
      ("tests/test_metrics.py",), "CNR absolute instead of signed"),
    P("M2", "afloc/localization/metrics.py", "    return float(mask.reshape(-1)[np.nanargmax(heatmap)])",
      "    return float(mask[heatmap == np.nanmax(heatmap)].any())", ("tests/test_metrics.py",),
      "pointing game: any maximal pixel instead of the first"),
    P("M3", "afloc/localization/metrics.py",
      "    return per_category, float(nanmean(np.array(list(per_category.values()), dtype=np.float64)))",
      "    return per_category, float(nanmean(values))", ("tests/test_metrics.py",),
      "macro average computed as a micro average"),
    P("M4", "afloc/localization/metrics.py", "    denominator = np.sqrt(inside.var(dtype=np.float64) + outside.var(dtype=np.float64))",
      "    denominator = np.sqrt(inside.var(dtype=np.float64, ddof=1) + outside.var(dtype=np.float64, ddof=1))",
      ("tests/test_metrics.py",), "CNR with sample instead of population variances"),
    P("M5", "training/evaluation/protocol.py", "    return (image_left if \"right\" in sides else total - image_left) / total",
      "    return (image_left if \"left\" in sides else total - image_left) / total",
      ("tests/test_evaluation.py",), "side mass in the image's frame, not the patient's"),
    # --- C: settings inferred from a checkpoint
    P("C1", "afloc/convert/layouts.py", "        heads = hidden // 64", "        heads = hidden // 32",
      ("tests/test_slips.py", "tests/test_convert.py", "tests/test_parity.py"), "attention heads inferred from 32-wide heads"),
    P("C2", "afloc/convert/layouts.py", '    heads = num_attention_heads or hints.get("num_attention_heads")',
      "    heads = num_attention_heads", ("tests/test_slips.py", "tests/test_convert.py", "tests/test_parity.py"),
      "the head count of the checkpoint's config.json ignored"),
)  # fmt: skip


def _ignore(directory: str, names: list[str]) -> set[str]:
    ignored = {n for n in names if n in ("__pycache__", ".pytest_cache", ".ruff_cache", ".git")}
    if Path(directory).resolve() == ROOT:
        ignored |= {"data", "runs"} & set(names)
    return ignored


def check(plant: Plant, tests_from: str | None = None) -> None:
    text = (ROOT / plant.path).read_text(encoding="utf-8")
    count = text.count(plant.old)
    if count != 1:
        raise SystemExit(f"{plant.id}: the text to replace occurs {count} times in {plant.path} (must be once)")
    missing = [t for t in plant.tests if not (ROOT / t).is_file()]
    if missing and not tests_from:
        raise SystemExit(f"{plant.id}: covering tests not found: {missing}")


def run(plant: Plant, workdir: Path, timeout: float, tests_from: str | None = None) -> dict:
    repo = workdir / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(ROOT, repo, ignore=_ignore, symlinks=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir() and not (workdir / "shared").exists():
        (workdir / "shared").symlink_to(shared)
    if tests_from:  # the suite as it was at another commit (e.g. before the tests that kill these plants)
        shutil.rmtree(repo / "tests")
        archive = subprocess.run(["git", "archive", tests_from, "tests"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(repo)], input=archive.stdout, check=True)
    target = repo / plant.path
    target.write_text(target.read_text(encoding="utf-8").replace(plant.old, plant.new), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env["PYTHONPATH"] = str(repo)  # the copy, not the editable install of the checkout
    started = time.perf_counter()
    tests = [t for t in plant.tests if (repo / t).is_file()]
    if not tests:  # no covering test file in this suite: nothing can notice the slip
        return {"id": plant.id, "class": plant.id.rstrip("0123456789"), "what": plant.what, "status": "survived",
                "seconds": 0.0, "last_line": "no covering test file"}  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=repo, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        code, tail = done.returncode, (done.stdout + done.stderr).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        code, tail = None, ["timeout"]
    status = "killed" if code in (1, 2, 3) else "survived" if code == 0 else f"other ({code})"
    return {"id": plant.id, "class": plant.id.rstrip("0123456789"), "what": plant.what, "status": status,
            "seconds": round(time.perf_counter() - started, 1), "last_line": tail[0] if tail else ""}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="plant ids")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tests-from", help="a commit whose tests/ folder replaces the copy's (a 'before' score)")
    parser.add_argument("--tests", nargs="*", help="run these test files instead of each plant's covering tests")
    args = parser.parse_args(argv)
    plants = [p for p in PLANTS if not args.only or p.id in args.only]
    if args.tests:
        plants = [dataclasses.replace(p, tests=tuple(args.tests)) for p in plants]
    for plant in plants:
        check(plant, args.tests_from)
    if args.list:
        for plant in plants:
            print(f"{plant.id:<4} {plant.path:<40} {plant.what}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="audit_") as tmp:
        for plant in plants:
            result = run(plant, Path(tmp), args.timeout, args.tests_from)
            results.append(result)
            print(f"{result['id']:<4} {result['status']:<9} {result['seconds']:>6.1f} s  {plant.what}", flush=True)
    print()
    for key, name in CLASSES.items():
        mine = [r for r in results if r["class"] == key]
        if mine:
            killed = sum(r["status"] == "killed" for r in mine)
            print(f"{key} {name}: {killed}/{len(mine)} killed")
    total = sum(r["status"] == "killed" for r in results)
    print(f"all: {total}/{len(results)} killed")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
