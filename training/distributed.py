"""Gathering embeddings across DDP ranks with gradients, so every loss sees the global batch as negatives."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather

from afloc.modeling.types import ImageEncoderOutput, TextEncoderOutput


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0; gradients flow back to each rank's part."""
    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def gather_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-sample tensor without gradient (zone-view boxes, masks) from every rank along dim 0."""
    parts = [torch.empty_like(boxes) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, boxes.contiguous())
    return torch.cat(parts, dim=0)


def _gather_mask(mask: torch.Tensor) -> torch.Tensor:
    """Concatenate a boolean mask from every rank (no gradient; sent as uint8, which every backend supports)."""
    return gather_boxes(mask.to(torch.uint8)).bool()


def _pad_to_global_length(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Pad ``dim`` with zeros to the largest size over all ranks (token / sentence counts differ per rank)."""
    length = torch.tensor([tensor.shape[dim]], device=tensor.device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX)
    missing = int(length.item()) - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.ndim - dim - 1) + [0, missing]
    return F.pad(tensor, pad)


def gather_image_outputs(out: ImageEncoderOutput) -> ImageEncoderOutput:
    return ImageEncoderOutput(
        _gather(out.shallow_patch_embeddings), _gather(out.patch_embeddings), _gather(out.image_embedding)
    )


def gather_text_outputs(out: TextEncoderOutput) -> TextEncoderOutput:
    """Gather text outputs; masks (no gradient) are padded with False to the global token / sentence count."""
    return TextEncoderOutput(
        word_embeddings=_gather(_pad_to_global_length(out.word_embeddings, 1)),
        word_mask=_gather_mask(_pad_to_global_length(out.word_mask, 1)),
        sentence_embeddings=_gather(_pad_to_global_length(out.sentence_embeddings, 1)),
        sentence_mask=_gather_mask(_pad_to_global_length(out.sentence_mask, 1)),
        report_embedding=_gather(out.report_embedding),
    )
