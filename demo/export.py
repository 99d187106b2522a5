"""Exports: the figure with a provenance footer (PNG), the heatmap (.npy) and a JSON record whose layout is
demo/export_schema.json (documented in docs/export_format.md); no gradio import.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import numpy as np

from afloc.localization.overlay import (
    add_footer,
    save_png,
    slug,
)

from .callbacks import NOTICE, RELEASED, Status
from .session import Session
from .view import View, render

# ------------------------------------------------------------------------------------------------ export
EXPORT_SCHEMA_VERSION = 1

"""Version of the exported JSON's layout (``demo/export_schema.json``, documented in ``docs/export_format.md``)."""


def footer_lines(session: Session, view: View) -> list[str]:
    """What an exported figure keeps with it: the model and its training data, the image, the prompt and threshold,
    and that this is research software."""
    data = {True: "trained on synthetic images only", False: "trained on real images"}.get(session.model_synthetic)
    return [
        f"AFLoc demo | model {session.model_name} ({data or 'training data not recorded'})",
        f"image {session.image_name} | prompt '{view.prompt}' | threshold {view.threshold:g}",
        "RESEARCH USE ONLY - not a medical device, not for diagnosis",
    ]


def export_record(session: Session, view: View, heatmap_file: str) -> dict:
    """The exported JSON (schema ``demo/export_schema.json``)."""
    import datetime
    import hashlib

    from afloc import __version__

    image = session.image
    return {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "app": {"name": "afloc-demo", "version": __version__},
        "model": {
            "name": session.model_name,
            "weights_sha256_16": session.model_digest or None,
            "trained_on_synthetic_images_only": session.model_synthetic,
        },
        "modality": session.modality,
        "image": {
            "name": session.image_name,
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "sha256_of_decoded_pixels": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
        },
        "prompt": view.prompt,
        "threshold": view.threshold,
        "opacity": view.opacity,
        "heatmap": {
            "file": heatmap_file,
            "shape": [int(n) for n in view.heatmap.shape],
            "range": [-1.0, 1.0],
            "meaning": "similarity of each original pixel's image region to the prompt, min-max scaled to [-1, 1] "
            "per prompt (float32 .npy, NaN where undefined); not a probability of disease",
        },
        "boxes": {
            "format": "x, y, width, height in original pixels; origin at the top-left corner of the top-left pixel",
            "matched_by": view.matched_by,
            "ground_truth": [{"box": [float(v) for v in b[:4]], "label": b.label} for b in view.scored_boxes],
        },
        "metrics": {k: None if math.isnan(v) else v for k, v in view.metrics.items()} if view.metrics else None,
        "centre_prior_metrics": (
            {k: None if math.isnan(v) else v for k, v in view.reference.items()} if view.reference else None
        ),
        "zero_shot_probabilities": session.probabilities,  # calibrated only
        "zero_shot": {
            f: {
                "probability": r.probability,
                "uncalibrated_score": r.uncalibrated,
                "seen_in_training": r.seen_in_training,
            }
            for f, r in session.zero_shot.items()
        },
        "out_of_distribution": session.encoded.out_of_distribution if session.encoded is not None else None,
        "ood_score": session.encoded.ood_score if session.encoded is not None else None,
        "prompt_names_unseen_findings": session.unseen.get(view.prompt, []),
        "notice": NOTICE,
    }


def export(
    session: Session, selected: str | None, threshold: float, opacity: float, window: str | None = None
) -> tuple[list[Path], Status]:
    """Write the figure (PNG, the film in the display ``window``), the heatmap (``.npy``, float32 on the original
    pixels) and a JSON record."""
    view = render(session, selected, threshold, opacity, window)
    if view.heatmap is None:
        if session.released:
            return [], Status(RELEASED, error=True)
        return [], Status("Nothing to export yet: localize a prompt first.", error=True)
    folder = session.folder()
    stem = f"{slug(Path(session.image_name).stem, 50)}__{slug(view.prompt, 50)}__{uuid.uuid4().hex[:6]}"
    png, npy, record = (folder / f"{stem}{suffix}" for suffix in (".png", ".npy", ".json"))
    np.save(npy, view.heatmap)
    record_data = export_record(session, view, npy.name)
    save_png(png, add_footer(view.figure, footer_lines(session, view)))
    record.write_text(json.dumps(record_data, indent=2))
    session.add_export([png, npy, record])
    return [png, npy, record], Status(f"Exported {png.name}, {npy.name} and {record.name}.")
