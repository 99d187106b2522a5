"""Fit a model directory's zero-shot calibration and out-of-distribution summary on labelled validation images.

    python -m training calibrate --model assets/models/afloc_phantomcxr_r10 --manifest data/phantom6k/manifest.csv

Writes ``calibration.json`` (per-finding Platt scaling, :mod:`afloc.localization.calibration`), ``ood.safetensors``
(:mod:`afloc.localization.ood`) and ``calibration.png`` (a reliability diagram) into the model directory, and a
"Zero-shot calibration" section into its card. A finding is positive for an image when the manifest's ``labels``
column names it (``pleural_effusion`` answers "pleural effusion"; plurals match); findings the split has only one
class of (e.g. "pneumonia" on PhantomCXR, "optic disc" on every fundus photo) stay uncalibrated. ``training
export`` runs this on the training manifest's val split.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from afloc import AFLocPredictor, load_pretrained
from afloc.commands import command
from afloc.hub.format import CARD_NAME, write_validation_summaries
from afloc.imaging.io import load_image
from afloc.localization.calibration import ZeroShotCalibration, fit_calibration, reliability, uncalibrated_probability
from afloc.localization.ood import OODSummary, ood_features
from afloc.text.prompts import FINDINGS_BY_MODALITY, covers

from .manifest import read_manifest

PLOT_NAME = "calibration.png"
MIN_IMAGES = 20  # fewer validation images give neither a calibration nor a threshold worth showing
SECTION_TITLE = "## Zero-shot calibration and out-of-distribution flag"


@dataclass
class LabelledEmbeddings:
    """Global image embeddings ``[N, D]`` and OOD features ``[N, D]`` of a split, and per zero-shot finding, which
    images are positive."""

    embeddings: torch.Tensor
    features: torch.Tensor
    labels: dict[str, np.ndarray]
    paths: list[Path]


def labels_for(findings: tuple[str, ...], image_labels: tuple[str, ...]) -> dict[str, bool]:
    """Per zero-shot finding, whether an image with ``image_labels`` (manifest names such as ``pleural_effusion``)
    is positive for it."""
    return {finding: covers(image_labels, finding) for finding in findings}


def embed_split(
    predictor: AFLocPredictor, manifest: str | Path, split: str, max_images: int | None = None, batch_size: int = 32
) -> LabelledEmbeddings:
    """Encode the images of one split of ``manifest`` (in manifest order, at most ``max_images``)."""
    records = read_manifest(manifest, split)[:max_images]
    if not records:
        raise ValueError(f"{manifest} has no {split} images")
    findings = FINDINGS_BY_MODALITY[predictor.preprocessing.modality]
    chunks, features, labels = [], [], {finding: [] for finding in findings}
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        tensors = torch.stack([predictor.preprocessing(load_image(r.image))[0] for r in batch])
        out = predictor.encode_images(tensors)
        chunks.append(out.image_embedding)
        features.append(ood_features(out.patch_embeddings))
        for record in batch:
            for finding, positive in labels_for(findings, record.labels).items():
                labels[finding].append(positive)
    arrays = {finding: np.asarray(values, dtype=bool) for finding, values in labels.items()}
    return LabelledEmbeddings(torch.cat(chunks), torch.cat(features), arrays, [r.image for r in records])


def calibrate(
    model_dir: str | Path, manifest: str | Path, split: str = "val", max_images: int | None = None
) -> tuple[ZeroShotCalibration, OODSummary]:
    """Fit both summaries on ``split`` of ``manifest``, write them, the plot and the card section into ``model_dir``.

    Raises:
        ValueError: an unreadable model or manifest, or a split without images.
    """
    model_dir = Path(model_dir)
    predictor = AFLocPredictor.from_bundle(load_pretrained(model_dir), device="cpu")
    data = embed_split(predictor, manifest, split, max_images)
    if len(data.paths) < MIN_IMAGES:
        raise ValueError(f"the {split} split has {len(data.paths)} images; calibration needs at least {MIN_IMAGES}")
    findings = FINDINGS_BY_MODALITY[predictor.preprocessing.modality]
    logits = predictor.zero_shot_logits_batch(findings, data.embeddings)
    where = f"the {split} split of {Path(manifest).parent.name}/{Path(manifest).name} ({len(data.paths)} images)"
    calibration = fit_calibration(logits, data.labels, split=where)
    ood = OODSummary.fit(data.features, components=min(16, len(data.paths) // 2))
    write_validation_summaries(model_dir, calibration, ood)
    plot_reliability(model_dir / PLOT_NAME, calibration, logits, data.labels)
    card = model_dir / CARD_NAME
    if card.is_file():
        card.write_text(with_section(card.read_text(encoding="utf-8"), card_section(calibration, ood, findings)))
    return calibration, ood


def card_section(calibration: ZeroShotCalibration, ood: OODSummary, findings: tuple[str, ...]) -> str:
    rows = []
    for finding in findings:
        item = calibration.get(finding)
        if item is None:
            rows.append(f"| {finding} | - | - | - | - | uncalibrated: one class only in the split |")
        else:
            rows.append(
                f"| {finding} | {item.n} / {item.positives} | {item.auc:.3f} | {item.ece_before:.3f} | "
                f"{item.ece_after:.3f} | slope {item.slope:.3f}, bias {item.bias:.3f} |"
            )
    return "\n".join(
        [
            SECTION_TITLE,
            "",
            f"Fitted on {calibration.split} by `python -m training calibrate`. Per finding, Platt scaling of the "
            "zero-shot logit (positive minus negative prompt-set score): `p = sigmoid(slope * z + bias)`. ECE: "
            "expected calibration error, 10 equal-width bins, on the same images. Findings without a calibration are "
            "shown as uncalibrated scores, not probabilities.",
            "",
            "| finding | images / positive | AUC | ECE before | ECE after | parameters |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Reliability diagram (the same images, all calibrated findings pooled): `{PLOT_NAME}` in this folder.",
            "",
            "Out-of-distribution flag: an image whose mean deep-map embedding has a Mahalanobis score "
            f"(`ood.safetensors`: the mean and {ood.components.shape[0]} principal directions of {ood.n} fitted "
            f"images' features) over "
            f"{ood.threshold:.3f}, those images' {ood.quantile:.0%} quantile, is flagged as unlike the "
            "images this model was trained on: its heatmap and scores are not meaningful.",
        ]
    )


def with_section(card: str, section: str) -> str:
    """``card`` with its calibration section replaced (or appended)."""
    pattern = re.compile(rf"^{re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(card):
        return pattern.sub(lambda _: section.rstrip() + "\n\n", card, count=1).rstrip() + "\n"
    return card.rstrip() + "\n\n" + section.rstrip() + "\n"


def plot_reliability(
    path: Path, calibration: ZeroShotCalibration, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> None:
    """Observed frequency against predicted probability, before and after, all calibrated findings pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw, fitted, truth = [], [], []
    for finding, z in logits.items():
        item = calibration.get(finding)
        if item is not None:
            raw.append(uncalibrated_probability(z))
            fitted.append(item.probability(z))
            truth.append(labels[finding])
    if not raw:
        return
    figure, axis = plt.subplots(figsize=(4.2, 4.0), dpi=100)
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    for values, name, colour in ((raw, "uncalibrated", "tab:red"), (fitted, "calibrated", "tab:blue")):
        rows = reliability(np.concatenate(values), np.concatenate(truth))
        axis.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", color=colour, label=name)
    axis.set(xlabel="predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    axis.set_title("Zero-shot reliability (validation, pooled)", fontsize=9)
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory (written into)")
    parser.add_argument("--manifest", required=True, help="manifest whose split has a labels column")
    parser.add_argument("--split", default="val", help="the split fitted on (default: val)")
    parser.add_argument("--max-images", type=int, default=None, help="use at most this many images of the split")
    args = parser.parse_args(argv)
    calibration, ood = calibrate(args.model, args.manifest, args.split, args.max_images)
    for finding, item in calibration.findings.items():
        print(f"{finding}: AUC {item.auc:.3f}, ECE {item.ece_before:.3f} -> {item.ece_after:.3f}")
    print(f"OOD threshold {ood.threshold:.3f} from {ood.n} images; wrote {args.model}")
    return 0
