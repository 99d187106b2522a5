"""Demo examples: PhantomCXR test films covering every finding, plus DICOM copies, each with ground truth JSON;
and a few PhantomFundus photographs (``--modality fundus``).

    python -m training.phantoms examples --out assets/examples
    python -m training.phantoms examples --out assets/examples --modality fundus

Each example ``NAME.png`` (or ``.dcm``) has ``NAME.json``::

    {"image": "NAME.png", "modality": "cxr", "synthetic": true, "source": "PhantomCXR seed S case I",
     "suggested_prompt": "...", "report": "...",
     "findings": [{"category": "...", "phrase": "...", "boxes": [[x, y, w, h], ...]}]}

Boxes are in the image's own pixels; sides are the patient's (patient's right on the image's left).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .generate import CorpusSpec, generate_case, write_dicom
from .schema import FINDING_KINDS

EXAMPLE_SEED = 2024


def _ground_truth(case, report: str, image_name: str, spec: CorpusSpec, index: int, modality: str = "cxr") -> dict:
    findings = [
        {"category": f.kind, "phrase": f.phrase, "boxes": [[round(float(v), 1) for v in b] for b in f.boxes]}
        for f in case.findings
    ]
    generator = "PhantomFundus synthetic photograph" if modality == "fundus" else "PhantomCXR synthetic film"
    return {
        "image": image_name,
        "modality": modality,
        "synthetic": True,
        "source": f"{generator} (seed {spec.seed}, case {index}, split {case.split}); not a patient",
        "suggested_prompt": findings[0]["phrase"] if findings else "no acute cardiopulmonary process",
        "report": report,
        "findings": findings,
    }


def write_examples(out: str | Path, size: int = 256, seed: int = EXAMPLE_SEED, dicoms: int = 2) -> list[Path]:
    """One test-split film per finding kind (first found in case order), then ``dicoms`` films as DICOM
    (the first MONOCHROME2, the second MONOCHROME1)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = CorpusSpec(n=10**6, size=size, seed=seed)
    wanted = list(FINDING_KINDS)
    written: list[Path] = []
    index = 0
    while wanted or dicoms > 0:
        case, image, report = generate_case(index, spec)
        index += 1
        if case.split != "test" or not case.findings:
            continue
        first = case.findings[0].kind
        if first in wanted:
            wanted.remove(first)
            name = f"phantom_{first}"
            cv2.imwrite(str(out / f"{name}.png"), np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))
            suffix = ".png"
        elif not wanted and dicoms > 0:
            monochrome1 = dicoms == 1
            name = f"phantom_dicom_{'monochrome1' if monochrome1 else 'monochrome2'}"
            write_dicom(out / f"{name}.dcm", image, monochrome1=monochrome1, seed=seed, index=index - 1)
            dicoms -= 1
            suffix = ".dcm"
        else:
            continue
        truth = _ground_truth(case, report, f"{name}{suffix}", spec, index - 1)
        (out / f"{name}.json").write_text(json.dumps(truth, indent=2) + "\n")
        written.append(out / f"{name}{suffix}")
    return written


FUNDUS_EXAMPLE_KINDS = ("hard_exudates", "haemorrhage", "drusen")


def write_fundus_examples(out: str | Path, size: int = 256, seed: int = EXAMPLE_SEED) -> list[Path]:
    """One test-split PhantomFundus photograph per kind of :data:`FUNDUS_EXAMPLE_KINDS` (first found in case
    order, as ``phantom_fundus_<kind>.png`` + ``.json``)."""
    from .fundus.generate import generate_fundus_case, write_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = CorpusSpec(n=10**6, size=size, seed=seed)
    wanted, written, index = list(FUNDUS_EXAMPLE_KINDS), [], 0
    while wanted:
        case, image, report = generate_fundus_case(index, spec)
        index += 1
        if case.split != "test" or not case.findings or case.findings[0].kind not in wanted:
            continue
        kind = case.findings[0].kind
        wanted.remove(kind)
        name = f"phantom_fundus_{kind}"
        write_png(out / f"{name}.png", image)
        truth = _ground_truth(case, report, f"{name}.png", spec, index - 1, modality="fundus")
        (out / f"{name}.json").write_text(json.dumps(truth, indent=2) + "\n")
        written.append(out / f"{name}.png")
    return written
