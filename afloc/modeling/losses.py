"""Multi-level contrastive losses (AFLoc paper, "multi-level semantic structure-based contrastive learning").

Every loss is symmetric: cross-entropy over images (image -> text) plus over texts (text -> image), summed,
as in the reference. Batch element ``k`` of the image side is paired with element ``k`` of the text side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import LossConfig
from .types import ImageEncoderOutput, TextEncoderOutput

_EPS = 1e-8
# Auto chunking keeps one chunk's [chunk, B_images, regions, tokens] tensor under this many elements.
_CHUNK_ELEMENTS = 2**23


def _symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``CE(S, diag) + CE(S^T, diag)`` for a square ``[B, B]`` logit matrix (rows = images)."""
    if logits.shape[0] != logits.shape[1]:
        raise ValueError(f"image and text batches must have the same size, got {tuple(logits.shape)}")
    targets = torch.arange(logits.shape[0], device=logits.device)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)


def global_contrastive_loss(
    image_embedding: torch.Tensor, report_embedding: torch.Tensor, logit_scale: float = 10.0
) -> torch.Tensor:
    """Report-level (CLIP-style) loss.

    ``S[j, i] = logit_scale * cos(image_embedding[j], report_embedding[i])``; returns
    ``CE(S, diag) + CE(S^T, diag)``.

    Args:
        image_embedding: ``[B, D]`` global image vectors.
        report_embedding: ``[B, D]`` report vectors.
        logit_scale: gamma3 (``temp3`` in the reference), 10.
    """
    if image_embedding.ndim != 2 or image_embedding.shape != report_embedding.shape:
        raise ValueError(
            f"expected two [B, D] tensors of the same shape, got {tuple(image_embedding.shape)} and "
            f"{tuple(report_embedding.shape)}"
        )
    accumulate = torch.promote_types(image_embedding.dtype, torch.float32)
    image = F.normalize(image_embedding.to(accumulate), dim=-1, eps=_EPS)
    report = F.normalize(report_embedding.to(accumulate), dim=-1, eps=_EPS)
    return _symmetric_cross_entropy(logit_scale * image @ report.t())


def _chunk_region_token_scores(
    regions: torch.Tensor,
    tokens: torch.Tensor,
    token_mask: torch.Tensor,
    attention_temperature: float,
    aggregation_temperature: float,
    null_attention: bool = False,
    region_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``R(i, j)`` for a chunk of texts against all images.

    The attention is kept in the layout ``[Bi, N, c*T]`` so that both products are single (batched) matrix
    multiplications on views, without permuted copies of the largest tensor.

    Args:
        regions: ``[Bi, N, D]`` region features of every image.
        tokens: ``[c, T, D]`` token features of ``c`` texts.
        token_mask: ``[c, T]`` bool.
        null_attention: a "no token" slot of logit 0 in step 2's softmax (see :class:`LossConfig`).
        region_mask: ``[Bi, N]`` bool, the regions each image's words may attend to (step 3); None = all.

    Returns:
        ``[c, Bi]`` log-sum-exp aggregated similarities.
    """
    num_images, num_regions, dim = regions.shape
    num_texts, num_tokens, _ = tokens.shape
    accumulate = torch.promote_types(regions.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
    # 1. raw dot products between every region and every token of every text: one matrix product
    attention = torch.matmul(regions, tokens.reshape(num_texts * num_tokens, dim).t())  # [Bi, N, c*T]
    attention = attention.view(num_images, num_regions, num_texts, num_tokens)
    # 2. softmax over the tokens of each region (padding excluded); fp32 like autocast does for softmax
    attention = attention.to(accumulate).masked_fill(~token_mask[None, None], float("-inf"))
    if null_attention:
        # softmax over the tokens plus one slot of logit 0: exp(a_t - m) / (sum_t exp(a_t - m) + exp(-m))
        top = attention.amax(dim=-1, keepdim=True).clamp(min=0.0)
        attention = (attention - top).exp()
        attention = attention / (attention.sum(dim=-1, keepdim=True) + (-top).exp())
    else:
        attention = attention.softmax(dim=-1)
    # 3. softmax over regions of the sharpened token-normalised scores, per token
    attention = attention_temperature * attention
    if region_mask is not None:  # regions outside an image's view take no attention
        attention = attention.masked_fill(~region_mask[:, :, None, None], float("-inf"))
    attention = attention.softmax(dim=1).to(regions.dtype)
    # 4. attended visual context of every token: [Bi, c*T, N] @ [Bi, N, D]
    context = torch.bmm(attention.view(num_images, num_regions, -1).transpose(1, 2), regions)
    context = context.view(num_images, num_texts, num_tokens, dim)
    # 5. cosine between each token and its context
    dot = (context * tokens.unsqueeze(0)).sum(dim=-1, dtype=accumulate)  # [Bi, c, T]
    norms = torch.linalg.vector_norm(context, dim=-1, dtype=accumulate)
    norms = norms * torch.linalg.vector_norm(tokens, dim=-1, dtype=accumulate).unsqueeze(0)
    cosine = dot / norms.clamp(min=_EPS)
    # 6. log-sum-exp over the caption's tokens
    scores = (aggregation_temperature * cosine).masked_fill(~token_mask[None], float("-inf"))
    return torch.logsumexp(scores, dim=-1).t()


def local_contrastive_loss(
    patch_embeddings: torch.Tensor,
    token_embeddings: torch.Tensor,
    token_mask: torch.Tensor,
    attention_temperature: float = 4.0,
    aggregation_temperature: float = 5.0,
    logit_scale: float = 10.0,
    text_chunk_size: int | None = None,
    recompute: bool = False,
    null_attention: bool = False,
    region_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Region <-> token loss (used for words on the shallow map and for sentences on the deep map).

    For text ``i`` with tokens ``Q_i`` and image ``j`` with regions ``V_j``: ``A = V_j^T Q_i``; softmax over
    tokens (A1); softmax over regions of ``attention_temperature * A1``; context ``c_t``; ``s_t = cos(Q_t, c_t)``;
    ``R(i, j) = log sum_t exp(aggregation_temperature * s_t)``; ``S[j, i] = logit_scale * R(i, j)``; returns
    ``CE(S, diag) + CE(S^T, diag)``.

    All B x B pairs are computed with batched einsums; texts are processed in chunks so that one chunk's
    ``[chunk, B, regions, tokens]`` tensor stays bounded, and with ``recompute=True`` each chunk's activations
    are recomputed in the backward pass instead of stored (peak memory of one chunk).

    Args:
        patch_embeddings: ``[B, D, h, w]`` region features.
        token_embeddings: ``[B, T, D]`` token (word or sentence) features.
        token_mask: ``[B, T]`` bool, True for the tokens that take part; every row needs at least one.
        attention_temperature: gamma1 (``temp1``), 4.
        aggregation_temperature: gamma2 (``temp2``), 5.
        logit_scale: gamma3 (``temp3``), 10.
        text_chunk_size: texts per chunk; ``None`` picks one from the tensor sizes.
        recompute: activation recomputation per chunk.
        null_attention: a "no token" slot of logit 0 in each region's softmax over tokens (not in the reference).
        region_mask: ``[B, h, w]`` bool, the regions of each image that tokens may attend to (a zone view's
            visible part; not in the reference); None = every region. Every image needs at least one.
    """
    if patch_embeddings.ndim != 4 or token_embeddings.ndim != 3:
        raise ValueError(
            f"expected patch_embeddings [B, D, h, w] and token_embeddings [B, T, D], got "
            f"{tuple(patch_embeddings.shape)} and {tuple(token_embeddings.shape)}"
        )
    if patch_embeddings.shape[1] != token_embeddings.shape[2]:
        raise ValueError(
            f"embedding widths differ: patches D={patch_embeddings.shape[1]}, tokens D={token_embeddings.shape[2]}"
        )
    if token_mask.shape != token_embeddings.shape[:2]:
        raise ValueError(f"token_mask shape {tuple(token_mask.shape)} != {tuple(token_embeddings.shape[:2])}")
    token_mask = token_mask.bool()
    if not bool(token_mask.any(dim=1).all()):
        raise ValueError("every text needs at least one token in token_mask")

    if region_mask is not None:
        if region_mask.shape != (patch_embeddings.shape[0], *patch_embeddings.shape[2:]):
            raise ValueError(
                f"region_mask shape {tuple(region_mask.shape)} != [B, h, w] of the patches "
                f"{(patch_embeddings.shape[0], *patch_embeddings.shape[2:])}"
            )
        region_mask = region_mask.bool().flatten(1)
        if not bool(region_mask.any(dim=1).all()):
            raise ValueError("every image needs at least one region in region_mask")
    regions = patch_embeddings.flatten(2).transpose(1, 2)  # [Bi, N, D]
    num_images, num_regions, _ = regions.shape
    num_texts, num_tokens, _ = token_embeddings.shape
    if text_chunk_size is None:
        per_text = max(1, num_images * num_regions * num_tokens)
        text_chunk_size = max(1, min(num_texts, _CHUNK_ELEMENTS // per_text))

    # Captions sorted by length and each chunk cropped to its longest caption: padding costs almost nothing.
    positions = torch.arange(1, num_tokens + 1, device=token_mask.device)
    lengths = (token_mask * positions).amax(dim=1)  # last valid token + 1
    order = torch.argsort(lengths, descending=True)
    sorted_lengths = lengths[order].tolist()
    chunks = []
    for start in range(0, num_texts, text_chunk_size):
        index = order[start : start + text_chunk_size]
        crop = sorted_lengths[start]
        args = (
            regions,
            token_embeddings[index, :crop],
            token_mask[index, :crop],
            attention_temperature,
            aggregation_temperature,
            null_attention,
            region_mask,
        )
        if recompute and torch.is_grad_enabled():
            chunks.append(checkpoint(_chunk_region_token_scores, *args, use_reentrant=False))
        else:
            chunks.append(_chunk_region_token_scores(*args))
    sorted_scores = torch.cat(chunks, dim=0)
    scores = torch.empty_like(sorted_scores).index_copy(0, order, sorted_scores)  # [B_texts, B_images] R(i, j)
    return _symmetric_cross_entropy(logit_scale * scores.t())


def box_cells(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[..., height, width]`` bool: the grid cells whose centres lie inside each ``(x0, y0, x1, y1)`` box of
    ``boxes [..., 4]`` (image fractions). A box that holds no cell centre holds no cell."""
    rows = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) / height
    cols = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) / width
    x0, y0, x1, y1 = (boxes[..., k, None] for k in range(4))
    inside_rows = (rows >= y0) & (rows < y1)  # [..., h]
    inside_cols = (cols >= x0) & (cols < x1)  # [..., w]
    return inside_rows[..., :, None] & inside_cols[..., None, :]


def boxes_to_region_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, height, width]`` bool: :func:`box_cells` of each ``(x0, y0, x1, y1)`` box of ``boxes [B, 4]``; a box
    that holds no cell centre keeps the cell nearest to its centre."""
    mask = box_cells(boxes, height, width)
    empty = ~mask.flatten(1).any(dim=1)
    if bool(empty.any()):
        x0, y0, x1, y1 = (boxes[:, k] for k in range(4))
        row = ((y0 + y1) / 2 * height).long().clamp(0, height - 1)
        col = ((x0 + x1) / 2 * width).long().clamp(0, width - 1)
        index = empty.nonzero().flatten()
        mask[index, row[index], col[index]] = True
    return mask


class AFLocLoss(nn.Module):
    """L = w_report L_report + w_sentence L_sentence + w_word L_word, every term returned by name.

    A term whose weight is 0 is not computed and not returned.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()

    def _local(
        self, patches: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, view_boxes: torch.Tensor | None
    ) -> torch.Tensor:
        c = self.config
        regions = None if view_boxes is None else boxes_to_region_mask(view_boxes, *patches.shape[-2:])
        return local_contrastive_loss(
            patches,
            tokens,
            mask,
            c.attention_temperature,
            c.aggregation_temperature,
            c.logit_scale,
            c.text_chunk_size,
            c.recompute,
            c.null_attention,
            regions,
        )

    def forward(
        self, image: ImageEncoderOutput, text: TextEncoderOutput, view_boxes: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Returns ``{"report", "sentence", "word"}`` (those with weight > 0) and ``"total"``.

        ``view_boxes``: ``[B, 4]`` ``(x0, y0, x1, y1)`` image fractions of each image's visible part (zone views,
        ``training.zone_views``; ``(0, 0, 1, 1)`` for a whole image): the local losses attend inside them only.
        """
        c = self.config
        terms: dict[str, torch.Tensor] = {}
        if c.report_weight > 0:
            terms["report"] = global_contrastive_loss(image.image_embedding, text.report_embedding, c.logit_scale)
        if c.sentence_weight > 0:
            terms["sentence"] = self._local(
                image.patch_embeddings, text.sentence_embeddings, text.sentence_mask, view_boxes
            )
        if c.word_weight > 0:
            patches = image.shallow_patch_embeddings if c.word_level == "shallow" else image.patch_embeddings
            terms["word"] = self._local(patches, text.word_embeddings, text.word_mask, view_boxes)
        weights = {"report": c.report_weight, "sentence": c.sentence_weight, "word": c.word_weight}
        total = sum(weights[name] * value for name, value in terms.items())
        terms["total"] = total
        return terms
