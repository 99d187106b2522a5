"""Command line: heatmaps for one image or a folder of images.

    python -m afloc IMAGE_OR_DIR --prompt "left lower lobe pneumonia" [--prompt ...] \\
        --model DIR --out DIR [--boxes FILE] [--threshold 0.3]

For every image and prompt it writes ``<image>__<prompt>.png`` (overlay, colour bar, legend, ground-truth
boxes when given) and ``<image>__<prompt>.npy`` (the float32 heatmap on the original pixels, NaN where
undefined). Images are recognised by content (PNG, JPEG, TIFF, DICOM), not by extension; files that are not
readable images are skipped and listed at the end. ``results.json`` lists, per image, whether it is out of the
model's distribution (``out_of_distribution``, ``ood_score``: None when the model has no summary) and, per prompt,
its files and the findings it names that the model's training reports never did.

``--boxes`` reads ground truth as COCO JSON (``images[].file_name`` + ``annotations[].bbox``, optional
``category_id`` / ``label_text``) or a CSV with columns ``image,x,y,w,h[,label]``, boxes in original pixels.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .commands import command

logger = logging.getLogger(__name__)


def _inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    raise ValueError(f"input {str(path)!r} does not exist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m afloc.__main__",
        description="Write AFLoc heatmaps (overlay PNG + .npy) for images and text prompts. "
        "Research software, not a medical device.",
    )
    parser.add_argument("input", help="an image file (PNG/JPEG/TIFF/DICOM) or a folder of them")
    parser.add_argument("--prompt", action="append", required=True, help="finding text; repeat for several")
    parser.add_argument("--model", required=True, help="model directory (save_pretrained) or our .ckpt")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--boxes", help="ground truth: COCO JSON or CSV image,x,y,w,h[,label]")
    parser.add_argument("--threshold", type=float, default=None, help="draw the contour of heatmap > t")
    parser.add_argument("--opacity", type=float, default=0.5)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .imaging.boxes import read_box_file
    from .imaging.io import load_image
    from .localization.overlay import render_figure, save_png, slug
    from .predictor import AFLocPredictor

    inputs = _inputs(Path(args.input))
    boxes = read_box_file(args.boxes) if args.boxes else {}
    predictor = AFLocPredictor.from_pretrained(args.model, device=args.device)
    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [-1, 1], got {args.threshold}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[str, str]] = []
    written, results = 0, []
    unseen = {prompt: predictor.unseen_findings(prompt) for prompt in args.prompt}
    for prompt, findings in unseen.items():
        if findings:
            print(
                f"warning: this model was not trained on reports of {', '.join(findings)} ({prompt!r})", file=sys.stderr
            )
    for path in tqdm(inputs, desc="images", unit="img", disable=len(inputs) < 2):
        try:
            image = load_image(path)
            encoded = predictor.encode_image(image)
            heatmaps = predictor.localize(args.prompt, image=encoded)
        except ValueError as error:
            skipped.append((path.name, str(error)))
            continue
        truth = boxes.get(path.name, [])
        if encoded.out_of_distribution:
            print(f"warning: {path.name} is unlike the images this model was trained on", file=sys.stderr)
        record = {"image": path.name, "out_of_distribution": encoded.out_of_distribution,
                  "ood_score": encoded.ood_score, "prompts": {}}  # fmt: skip
        results.append(record)
        for prompt, heatmap in zip(args.prompt, heatmaps, strict=True):
            stem = f"{path.stem}__{slug(prompt)}"
            record["prompts"][prompt] = {
                "heatmap": f"{stem}.npy",
                "figure": f"{stem}.png",
                "unseen_findings": unseen[prompt],
            }
            np.save(out / f"{stem}.npy", heatmap)
            figure = render_figure(
                image,
                heatmap,
                title=prompt,
                opacity=args.opacity,
                threshold=args.threshold,
                boxes=[list(box[:4]) for box in truth] or None,
                box_labels=[box.label for box in truth] or None,
            )
            save_png(out / f"{stem}.png", figure)
            written += 1
    (out / "results.json").write_text(json.dumps({"model": Path(args.model).name, "images": results}, indent=2) + "\n")
    print(f"wrote {written} heatmap(s) for {len(inputs) - len(skipped)} image(s) to {out}")
    for name, reason in skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
