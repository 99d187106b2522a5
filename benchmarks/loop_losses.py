"""The per-caption loop baselines that ``benchmarks/local_loss.py`` compares with the vectorised
:func:`afloc.modeling.losses.local_contrastive_loss`: a lean loop and one with the reference code's memory habits.
"""

from __future__ import annotations

import torch

GAMMA1, GAMMA2, GAMMA3 = 4.0, 5.0, 10.0  # the reference's temperatures


def per_caption_loop_loss(
    patch_embeddings: torch.Tensor,
    token_embeddings: torch.Tensor,
    token_mask: torch.Tensor,
    attention_temperature: float = GAMMA1,
    aggregation_temperature: float = GAMMA2,
    logit_scale: float = GAMMA3,
) -> torch.Tensor:
    """Per-caption loop, each caption against all images at once (the reference's structure)."""
    regions = patch_embeddings.flatten(2).transpose(1, 2)  # [B_img, N, D]
    num_images = regions.shape[0]
    rows = []
    for i in range(token_embeddings.shape[0]):
        words = token_embeddings[i][token_mask[i]]  # [T_i, D], valid tokens only
        words_t = words.t().unsqueeze(0).expand(num_images, -1, -1)  # [B_img, D, T_i]
        attention = torch.bmm(regions, words_t)  # [B_img, N, T_i]
        attention = attention.float().softmax(dim=2)  # over tokens
        attention = (attention_temperature * attention).softmax(dim=1)  # over regions
        context = torch.bmm(attention.to(regions.dtype).transpose(1, 2), regions)  # [B_img, T_i, D]
        words_b = words.unsqueeze(0).float()  # [1, T_i, D]
        context = context.float()
        cosine = (context * words_b).sum(-1) / (context.norm(dim=-1) * words_b.norm(dim=-1)).clamp(min=1e-8)
        rows.append(torch.logsumexp(aggregation_temperature * cosine, dim=1))  # [B_img] = R(i, :)
    scores = logit_scale * torch.stack(rows).t()  # S[j, i], rows = images
    targets = torch.arange(scores.shape[0], device=scores.device)
    return torch.nn.functional.cross_entropy(scores, targets) + torch.nn.functional.cross_entropy(scores.t(), targets)


def reference_style_loop_loss(
    patch_embeddings: torch.Tensor,
    token_embeddings: torch.Tensor,
    token_mask: torch.Tensor,
    attention_temperature: float = GAMMA1,
    aggregation_temperature: float = GAMMA2,
    logit_scale: float = GAMMA3,
) -> torch.Tensor:
    """Per-caption loop with the memory habits of the reference code (GLoRIA lineage).

    Same mathematics as :func:`per_caption_loop_loss`, but structured like the reference: the caption's words
    are ``repeat``-ed once per image, and every transpose is followed by ``.contiguous()`` copies (region-major
    attention, then token-major attention, then the context and words for the cosine). This is the baseline
    the issue names ("a per-caption loop written like the reference").
    """
    batch, dim, height, width = patch_embeddings.shape
    regions = patch_embeddings.reshape(batch, dim, height * width)  # [B, D, N]
    regions_t = regions.transpose(1, 2).contiguous()  # [B, N, D]
    rows = []
    for i in range(token_embeddings.shape[0]):
        words = token_embeddings[i][token_mask[i]].t().unsqueeze(0).contiguous()  # [1, D, T_i]
        words = words.repeat(batch, 1, 1)  # [B, D, T_i]
        num_words = words.shape[2]
        attention = torch.bmm(regions_t, words)  # [B, N, T_i]
        attention = attention.reshape(batch * height * width, num_words).float().softmax(dim=-1)
        attention = attention.reshape(batch, height * width, num_words).transpose(1, 2).contiguous()
        attention = (attention.reshape(batch * num_words, -1) * attention_temperature).softmax(dim=-1)
        attention = attention.reshape(batch, num_words, height * width).transpose(1, 2).contiguous()
        context = torch.bmm(regions, attention.to(regions.dtype))  # [B, D, T_i]
        words_flat = words.transpose(1, 2).contiguous().reshape(batch * num_words, -1).float()
        context_flat = context.transpose(1, 2).contiguous().reshape(batch * num_words, -1).float()
        dot = (words_flat * context_flat).sum(dim=1)
        cosine = dot / (words_flat.norm(dim=1) * context_flat.norm(dim=1)).clamp(min=1e-8)
        similarity = cosine.reshape(batch, num_words).mul(aggregation_temperature).exp()
        rows.append(torch.log(similarity.sum(dim=1)))  # [B_img] = R(i, :)
    scores = logit_scale * torch.stack(rows).t()
    targets = torch.arange(scores.shape[0], device=scores.device)
    return torch.nn.functional.cross_entropy(scores, targets) + torch.nn.functional.cross_entropy(scores.t(), targets)
