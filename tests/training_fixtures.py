"""Helpers shared by the training tests: a tiny BERT directory and a tiny image-report corpus."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

REPORTS = [
    "FINDINGS: Right lower lobe consolidation. No pleural effusion. IMPRESSION: Pneumonia.",
    "FINDINGS: The lungs are clear. Heart size is normal. IMPRESSION: No acute process.",
    "FINDINGS: Small left pleural effusion. No pneumothorax. IMPRESSION: Left effusion.",
    "FINDINGS: Left upper lobe nodule measuring 1.5 cm. IMPRESSION: Pulmonary nodule.",
    "FINDINGS: Mild cardiomegaly. Bilateral perihilar edema. IMPRESSION: Pulmonary edema.",
    "FINDINGS: Right apical pneumothorax. IMPRESSION: Small right pneumothorax.",
]


def write_tiny_bert(directory: Path, vocab_file: Path, bert_config: dict) -> Path:
    """A randomly initialised 4-layer BERT + tokenizer saved like a hub model (loads offline)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(vocab_file, directory / "vocab.txt")
    torch.manual_seed(0)
    BertModel(BertConfig(**bert_config), add_pooling_layer=False).save_pretrained(directory)
    BertTokenizerFast.from_pretrained(str(directory), do_lower_case=True).save_pretrained(directory)
    return directory


def write_tiny_corpus(directory: Path, n: int = 24, size: int = 48, corrupt: int = 0, colour: bool = False) -> Path:
    """Random greyscale (or ``colour``: RGB) images with varied reports; ``corrupt`` of them are garbage bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"img{i:03d}.png"
        if i < corrupt:
            (directory / name).write_bytes(b"not a png at all")
        else:
            shape = (size, size + i % 5, 3) if colour else (size, size + i % 5)
            Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(directory / name)
        split = "train" if i < int(0.7 * n) else ("val" if i < int(0.85 * n) else "test")
        rows.append({"image": name, "report": REPORTS[i % len(REPORTS)], "split": split})
    with (directory / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "report", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return directory / "manifest.csv"


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """A manifest CSV at ``path`` with the columns image, report, split (and any other keys of the rows)."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_disc_photograph(path: Path, disc_x: int, size: int = 64) -> Path:
    """A synthetic fundus photograph at ``path``: a dim red retina and a small bright disc centred at
    ``(disc_x, 30)`` (the brightest red blob, which :func:`training.zone_views.find_disc` finds)."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    image = np.zeros((size, size, 3), np.uint8)
    image[(xx - size // 2) ** 2 + (yy - size // 2) ** 2 < (size // 2 - 2) ** 2] = (110, 50, 20)
    image[(xx - disc_x) ** 2 + (yy - 30) ** 2 < 16] = (250, 180, 100)
    Image.fromarray(image).save(path)
    return path
