"""The data that passes between the tokenizer, the encoders and the losses: plain tensors in dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenizedText:
    """Token ids plus, per token, the index of its word and of its sentence.

    Shapes are ``[B, T]``. ``word_ids`` numbers words from 0 ([CLS]) and is -1 on padding; word pieces
    starting with ``##`` share the id of the word they continue. ``sentence_ids`` is 0 for [CLS], 1..m for the
    tokens of the m sentences, and -1 for the "." delimiters, [SEP] and padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    word_ids: torch.Tensor
    sentence_ids: torch.Tensor

    def to(self, device: torch.device | str) -> TokenizedText:
        return TokenizedText(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.word_ids, self.sentence_ids))
        )

    def __getitem__(self, index: slice | torch.Tensor) -> TokenizedText:
        return TokenizedText(
            self.input_ids[index], self.attention_mask[index], self.word_ids[index], self.sentence_ids[index]
        )


@dataclass
class ImageEncoderOutput:
    """Image embeddings at three levels in the joint space of width D.

    Attributes:
        shallow_patch_embeddings: ``[B, D, h2, w2]`` projected layer2 map (38x38 at 299, 28x28 at 224), used by
            the word-level loss. Without a shallow head (GLoRIA) this is the deep map itself.
        patch_embeddings: ``[B, D, h3, w3]`` projected layer3 map (19x19 at 299, 14x14 at 224), used by the
            sentence-level loss and for heatmaps.
        image_embedding: ``[B, D]`` projected average-pooled layer4 features (report-level loss, zero-shot).
    """

    shallow_patch_embeddings: torch.Tensor
    patch_embeddings: torch.Tensor
    image_embedding: torch.Tensor


@dataclass
class TextEncoderOutput:
    """Text embeddings at three granularities (D = BERT hidden size).

    Attributes:
        word_embeddings: ``[B, T, D]`` word vectors (sum of their word pieces), [CLS] first, [SEP] kept as its
            own word, zero-padded to the token length T.
        word_mask: ``[B, T]`` bool, True for [CLS] and the words used by the word-level loss ([SEP] and padding
            excluded).
        sentence_embeddings: ``[B, S, D]`` the [CLS] vector followed by one mean word vector per sentence
            ("." delimiters excluded), zero-padded.
        sentence_mask: ``[B, S]`` bool.
        report_embedding: ``[B, D]`` sum of all word vectors ([CLS], [SEP] included) divided by ``max_length``
            (reference quirk: the scale matters for raw dot products).
    """

    word_embeddings: torch.Tensor
    word_mask: torch.Tensor
    sentence_embeddings: torch.Tensor
    sentence_mask: torch.Tensor
    report_embedding: torch.Tensor
