"""GLoRIA's own scores (Huang et al., ICCV 2021), for scoring a converted GLoRIA model "as published".

A converted GLoRIA model is scored through this library's AFLoc path by default (a heatmap from the deep map and
the prompt's report vector; zero-shot from the global vectors). These functions give GLoRIA's own behaviour
instead, as its released code computes it (``docs/method.md``, "GLoRIA's own scores"):

- **Word attention.** For each word vector ``w_j`` (a column of the prompt) and region ``r`` of the deep map,
  ``a_rj = softmax_j(r . w_j)`` (over the prompt's words, per region), then
  ``attn_jr = softmax_r(temp1 * a_rj)`` (over the regions, per word; ``temp1 = 4``).
- **Localization map** (:func:`attention_map`): the per-region maximum over the prompt's words of ``attn_jr``, the
  words being [CLS] and the prompt's words (GLoRIA's attention figure, whose first panel is this maximum).
- **Local similarity** (:func:`local_similarity`): with the attention-weighted context ``c_j = sum_r attn_jr r``,
  ``log(max_j exp(temp2 * cos(w_j, c_j)))`` (``temp2 = 5``), over the zero-shot word columns
  (:func:`zero_shot_columns`).
- **Zero-shot score** (:func:`zero_shot_score`): the mean of the global cosine (global image vector against the
  report vector) and the local similarity. A class's score is the maximum over its prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ATTENTION_TEMPERATURE = 4.0  # temp1: sharpness of each word's distribution over the regions
LOCAL_TEMPERATURE = 5.0  # temp2: scale of the word-context cosines before the max


def word_attention(
    words: torch.Tensor, regions: torch.Tensor, temperature: float = ATTENTION_TEMPERATURE
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLoRIA's word-region attention.

    Args:
        words: ``[n, D]`` word vectors (the query columns).
        regions: ``[D, h, w]`` deep-map embeddings of one image.
        temperature: temp1.

    Returns:
        ``(context, attention)``: ``[n, D]`` attention-weighted region vectors and ``[n, h, w]`` attention maps
        (each word's map sums to 1 over the regions).
    """
    if words.ndim != 2 or regions.ndim != 3 or words.shape[1] != regions.shape[0]:
        raise ValueError(
            f"expected words [n, D] and regions [D, h, w], got {tuple(words.shape)} and {tuple(regions.shape)}"
        )
    dim, height, width = regions.shape
    flat = regions.float().reshape(dim, height * width)  # [D, R]
    scores = flat.T @ words.float().T  # [R, n]
    over_words = torch.softmax(scores, dim=1)  # per region, over the words
    attention = torch.softmax(temperature * over_words.T, dim=1)  # [n, R]: per word, over the regions
    context = attention @ flat.T  # [n, D]
    return context, attention.reshape(-1, height, width)


def attention_map(
    words: torch.Tensor, regions: torch.Tensor, temperature: float = ATTENTION_TEMPERATURE
) -> torch.Tensor:
    """GLoRIA's localization map ``[h, w]``: the per-region maximum over ``words`` ([CLS] and the prompt's words,
    ``[n, D]``) of their attention maps."""
    return word_attention(words, regions, temperature)[1].max(dim=0).values


def local_similarity(
    words: torch.Tensor,
    regions: torch.Tensor,
    attention_temperature: float = ATTENTION_TEMPERATURE,
    local_temperature: float = LOCAL_TEMPERATURE,
) -> torch.Tensor:
    """GLoRIA's zero-shot local similarity of one prompt with one image: ``log(max_j exp(temp2 * cos(w_j, c_j)))``,
    which is ``temp2 * max_j cos(w_j, c_j)`` (a scalar tensor). A zero column (padding) has cosine 0."""
    context, _ = word_attention(words, regions, attention_temperature)
    cosines = F.cosine_similarity(words.float(), context, dim=1, eps=1e-8)
    return local_temperature * cosines.max()


def zero_shot_columns(prompt: str, num_words: int, max_length: int) -> int:
    """How many word columns (after [CLS]) GLoRIA's released zero-shot code compares with the image.

    Its text processing counts the characters of the raw prompt that are not ``[`` (``len`` of a string, not of
    its words), so a prompt of 40 characters and 6 words takes [SEP] and 33 zero-padding columns too (they dilute
    the softmax over words, and a zero column's cosine of 0 floors the local similarity at 0). We follow it,
    capped at the ``max_length - 1`` columns that exist (GLoRIA's code fails beyond them), and never fewer than
    the prompt's ``num_words``.
    """
    characters = sum(1 for character in prompt if character != "[")
    return max(num_words, min(characters, max_length - 1))


def zero_shot_score(
    image_embedding: torch.Tensor,
    regions: torch.Tensor,
    report_embedding: torch.Tensor,
    words: torch.Tensor,
) -> torch.Tensor:
    """GLoRIA's zero-shot score of one prompt for one image: ``(cos(global image, report) + local) / 2``.

    Args:
        image_embedding: ``[D]`` global image vector.
        regions: ``[D, h, w]`` deep map.
        report_embedding: ``[D]`` the prompt's report vector.
        words: ``[n, D]`` the zero-shot word columns (:func:`zero_shot_columns`; [CLS] excluded).
    """
    cosine = F.cosine_similarity(image_embedding.float()[None], report_embedding.float()[None], dim=1, eps=1e-8)[0]
    return (cosine + local_similarity(words, regions)) / 2
