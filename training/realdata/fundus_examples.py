"""Demo examples from real IDRiD test photographs (issue #24): downscaled copies with their boxes and licences.

    python -m training.realdata.fundus_examples --source ../shared/data/fundus/idrid --out assets/examples

Writes ``idrid_NNNN.jpg`` (the longest side :data:`MAX_SIDE` px, JPEG) and ``idrid_NNNN.json`` (the demo's example
format: modality, source, licence, suggested prompt, each class's boxes in the copy's pixels) for :data:`NAMES`, the
first three photographs of the test folder, by file name, that have hard-exudate boxes. Chosen by that rule alone,
not by how any model does on them. They are test photographs: no model was trained or chosen on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from .fundus import CLASS_PHRASES, CLASSES, read_yolo_boxes

NAMES = ("0003", "0004", "0005")
MAX_SIDE = 768
QUALITY = 85
LICENCE = "image CC BY 4.0 (IDRiD, Porwal et al., 2018); boxes CC BY-SA 4.0 (codras, C. von Csefalvay, 2019)"


def write_idrid_examples(source: Path, out: Path, names: tuple[str, ...] = NAMES) -> list[Path]:
    """Write each named photograph of ``source`` (``NNNN.jpg`` + YOLO ``NNNN.txt``) as a demo example into ``out``;
    returns the JSON files written."""
    source, out = Path(source), Path(out)
    written = []
    for name in names:
        photo, labels = source / f"{name}.jpg", source / f"{name}.txt"
        if not photo.is_file() or not labels.is_file():
            raise FileNotFoundError(f"{source} has no {name}.jpg with its {name}.txt")
        with Image.open(photo) as image:
            image = image.convert("RGB")
            scale = MAX_SIDE / max(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            image.resize(size, Image.Resampling.LANCZOS).save(out / f"idrid_{name}.jpg", quality=QUALITY)
        boxes = read_yolo_boxes(labels, *size)  # YOLO boxes are fractions of the image: read in the copy's pixels
        findings = [
            {
                "category": kind,
                "phrase": CLASS_PHRASES[kind],
                "boxes": [[round(v, 1) for v in (b.x, b.y, b.w, b.h)] for b in boxes if b.label == kind],
            }
            for kind in CLASSES
            if any(b.label == kind for b in boxes)
        ]
        findings.sort(key=lambda f: f["category"] != "hard_exudates")  # the suggested prompt's class first
        truth = {
            "image": f"idrid_{name}.jpg",
            "modality": "fundus",
            "synthetic": False,
            "source": f"IDRiD photograph {name}.jpg of the test set (fundus/idrid, via codras), downscaled to {size[0]}"
            f" x {size[1]}; a real patient's photograph, published for research",
            "licence": LICENCE,
            "suggested_prompt": "hard exudates",
            "findings": findings,
        }
        path = out / f"idrid_{name}.json"
        path.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path, help="the IDRiD test folder (NNNN.jpg + NNNN.txt)")
    parser.add_argument("--out", required=True, type=Path, help="the examples folder (assets/examples)")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"--out {args.out} is not a folder")
    try:
        written = write_idrid_examples(args.source, args.out)
    except (FileNotFoundError, ValueError) as error:  # a missing photograph or a malformed box file, named
        parser.error(str(error))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
