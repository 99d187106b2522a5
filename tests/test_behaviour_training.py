"""Training descends: on one fixed batch of image-report pairs, the training loss must fall.

A tiny learnable problem (four films, their reports, repeated for 30 steps through ``python -m training fit``):
any model that can tell four images apart can lower the contrastive losses here, so a loss that climbs or stays
flat means the optimisation is broken (sign of a term, optimizer stepping the wrong way, gradients not applied).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from training_fixtures import write_tiny_bert, write_tiny_corpus

from training.cli import cli_main

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
STEPS = 30


@pytest.mark.slow
def test_training_lowers_the_loss_on_one_repeated_batch(tmp_path, vocab_file, tiny_bert_config):
    """Bug class: the training step climbing the loss instead of descending it."""
    bert = write_tiny_bert(tmp_path / "bert", vocab_file, tiny_bert_config)
    manifest = write_tiny_corpus(tmp_path / "corpus")
    cli_main(
        [
            "fit",
            "--config", str(CONFIGS / "smoke.yaml"),
            "--model.text_model", str(bert),
            "--model.learning_rate", "1e-3",
            "--model.lr_gamma", "1.0",
            "--data.manifest", str(manifest),
            "--trainer.default_root_dir", str(tmp_path / "run"),
            "--trainer.logger.init_args.save_dir", str(tmp_path / "run"),
            "--trainer.overfit_batches", "1",
            "--trainer.max_epochs", str(STEPS),
            "--trainer.max_steps", str(STEPS),
            "--trainer.limit_train_batches", "1",
            "--trainer.check_val_every_n_epoch", "10",
        ]
    )  # fmt: skip
    metrics = next((tmp_path / "run").rglob("metrics.csv"))
    with metrics.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    column = "train/total_step" if "train/total_step" in rows[0] else "train/total"  # on_step and on_epoch
    losses = [float(row[column]) for row in rows if row.get(column)]
    assert len(losses) == STEPS, len(losses)
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    assert np.isfinite(losses).all()
    assert last < 0.8 * first, (first, last, losses)
