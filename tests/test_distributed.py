"""DDP on CPU with the gloo backend: gathered losses equal the single-process loss; Lightning DDP runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port

from afloc import AFLocLoss
from afloc.modeling.types import ImageEncoderOutput, TextEncoderOutput
from training.distributed import gather_image_outputs, gather_text_outputs

WORLD = 2


def _outputs(seed: int, batch: int, tokens: int, sentences: int) -> tuple[ImageEncoderOutput, TextEncoderOutput]:
    g = torch.Generator().manual_seed(seed)
    dim = 8
    image = ImageEncoderOutput(
        torch.randn(batch, dim, 6, 6, generator=g), torch.randn(batch, dim, 3, 3, generator=g),
        torch.randn(batch, dim, generator=g),
    )  # fmt: skip
    word_mask = torch.arange(tokens)[None] < torch.randint(1, tokens + 1, (batch,), generator=g)[:, None]
    sentence_mask = torch.arange(sentences)[None] < torch.randint(1, sentences + 1, (batch,), generator=g)[:, None]
    text = TextEncoderOutput(
        torch.randn(batch, tokens, dim, generator=g) * word_mask[..., None], word_mask,
        torch.randn(batch, sentences, dim, generator=g) * sentence_mask[..., None], sentence_mask,
        torch.randn(batch, dim, generator=g),
    )  # fmt: skip
    return image, text


RANK_SHAPES = [(3, 5, 2), (3, 7, 4)]  # (batch, tokens, sentences) differ per rank


def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    pad = [0, 0] * (t.ndim - 2) + [0, length - t.shape[1]]
    return torch.nn.functional.pad(t, pad)


def _combined_loss() -> dict[str, float]:
    parts = [_outputs(rank, *RANK_SHAPES[rank]) for rank in range(WORLD)]
    tokens = max(s[1] for s in RANK_SHAPES)
    sentences = max(s[2] for s in RANK_SHAPES)
    image = ImageEncoderOutput(
        *(
            torch.cat([getattr(p[0], f) for p in parts])
            for f in ("shallow_patch_embeddings", "patch_embeddings", "image_embedding")
        )
    )
    text = TextEncoderOutput(
        torch.cat([_pad(p[1].word_embeddings, tokens) for p in parts]),
        torch.cat([_pad(p[1].word_mask, tokens) for p in parts]),
        torch.cat([_pad(p[1].sentence_embeddings, sentences) for p in parts]),
        torch.cat([_pad(p[1].sentence_mask, sentences) for p in parts]),
        torch.cat([p[1].report_embedding for p in parts]),
    )
    return {k: float(v) for k, v in AFLocLoss()(image, text).items()}


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        image, text = _outputs(rank, *RANK_SHAPES[rank])
        image.patch_embeddings.requires_grad_(True)
        terms = AFLocLoss()(gather_image_outputs(image), gather_text_outputs(text))
        terms["total"].backward()  # gradients flow back through the gather
        assert image.patch_embeddings.grad is not None and image.patch_embeddings.grad.abs().sum() > 0
        queue.put((rank, {k: float(v) for k, v in terms.items()}))
    finally:
        dist.destroy_process_group()


def test_gathered_loss_equals_single_process_loss_over_combined_batch():
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(_worker, args=(free_port(), queue), nprocs=WORLD, start_method="spawn")
    results = dict(queue.get() for _ in range(WORLD))
    expected = _combined_loss()
    for rank in range(WORLD):
        for name, value in expected.items():
            assert results[rank][name] == pytest.approx(value, rel=1e-5), (rank, name)


@pytest.mark.slow
def test_lightning_ddp_two_processes(tmp_path, vocab_file, tiny_bert_config):
    from training_fixtures import write_tiny_bert, write_tiny_corpus

    from training.cli import cli_main

    bert = write_tiny_bert(tmp_path / "bert", vocab_file, tiny_bert_config)
    manifest = write_tiny_corpus(tmp_path / "corpus")
    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "smoke.yaml"
    cli = cli_main([
        "fit", "--config", str(config), "--model.text_model", str(bert), "--data.manifest", str(manifest),
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn", "--model.gather_across_ranks", "true",
        "--data.batch_size", "3",
    ])  # fmt: skip
    assert cli.trainer.world_size == 2
    # ddp_spawn trains in child processes; what they did is in the checkpoint they wrote
    (last,) = tmp_path.rglob("last.ckpt")
    checkpoint = torch.load(str(last), map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert "model_config" in checkpoint["afloc"]
