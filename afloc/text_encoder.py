"""Multi-granularity text encoder: word, sentence and report embeddings from a BERT."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import nn

from .config import TextEncoderConfig
from .text import TokenizedText


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


def aggregate_granularities(
    token_vectors: torch.Tensor, text: TokenizedText, max_length: int, word_center: torch.Tensor | None = None
) -> TextEncoderOutput:
    """Aggregate token vectors into words, sentences and the report with segment sums (no token loops).

    Args:
        token_vectors: ``[B, T, D]`` per-token vectors.
        text: the tokenised batch with ``word_ids`` / ``sentence_ids``.
        max_length: divisor of the report vector.
        word_center: ``[D]`` subtracted from every word vector (incl. [CLS] and [SEP]) before sentences and the
            report are formed (:attr:`afloc.config.TextEncoderConfig.center_words`); ``None`` = reference.
    """
    batch, length, dim = token_vectors.shape
    valid = text.attention_mask.bool() & (text.word_ids >= 0)
    vectors = token_vectors * valid.unsqueeze(-1).to(token_vectors.dtype)

    word_index = text.word_ids.clamp(min=0).unsqueeze(-1).expand(-1, -1, dim)
    word_embeddings = torch.zeros_like(vectors).scatter_add_(1, word_index, vectors)
    num_words = (text.word_ids.max(dim=1).values + 1).clamp(min=0)  # includes [SEP]
    positions = torch.arange(length, device=token_vectors.device)
    word_mask = positions.unsqueeze(0) < (num_words - 1).clamp(min=1).unsqueeze(1)
    if word_center is not None:
        is_word = (positions.unsqueeze(0) < num_words.unsqueeze(1)).unsqueeze(-1)
        word_embeddings = word_embeddings - is_word.to(vectors.dtype) * word_center.to(vectors.dtype)

    in_sentence = text.sentence_ids >= 0
    num_sentences = int(text.sentence_ids.max().item()) + 1
    sentence_index = text.sentence_ids.clamp(min=0)
    sentence_vectors = vectors * in_sentence.unsqueeze(-1).to(vectors.dtype)
    sentence_sums = torch.zeros(batch, num_sentences, dim, dtype=vectors.dtype, device=vectors.device)
    sentence_sums.scatter_add_(1, sentence_index.unsqueeze(-1).expand(-1, -1, dim), sentence_vectors)
    previous = torch.cat([torch.full_like(text.word_ids[:, :1], -2), text.word_ids[:, :-1]], dim=1)
    word_starts = (in_sentence & (text.word_ids != previous)).to(vectors.dtype)
    word_counts = torch.zeros(batch, num_sentences, dtype=vectors.dtype, device=vectors.device)
    word_counts.scatter_add_(1, sentence_index, word_starts)
    sentence_mask = word_counts > 0
    sentence_embeddings = sentence_sums / word_counts.clamp(min=1).unsqueeze(-1)
    if word_center is not None:  # the mean of centred word vectors is the centred mean
        sentence_embeddings = sentence_embeddings - sentence_mask.unsqueeze(-1).to(vectors.dtype) * word_center.to(
            vectors.dtype
        )

    report_embedding = word_embeddings.sum(dim=1) / max_length
    return TextEncoderOutput(word_embeddings, word_mask, sentence_embeddings, sentence_mask, report_embedding)


class TextEncoder(nn.Module):
    """BERT whose token vectors are the sum of the last ``n`` hidden layers, aggregated per granularity.

    The last layers' outputs are captured by forward hooks that write into thread-local storage, rather than
    with ``output_hidden_states=True``: transformers 5 implements that flag with hooks of its own that cannot be
    pickled (breaking ``ddp_spawn`` and multiprocessing), and thread-local capture keeps concurrent calls from
    different threads (a web server) apart.

    Args:
        config: the text encoder configuration (``bert_config`` must be set).
        bert: an already built ``transformers`` BERT model (e.g. with pretrained weights); built from
            ``config.bert_config`` with random weights when omitted.
    """

    def __init__(self, config: TextEncoderConfig, bert: nn.Module | None = None) -> None:
        super().__init__()
        if bert is None:
            from transformers import BertConfig, BertModel

            if config.bert_config is None:
                raise ValueError("TextEncoderConfig.bert_config is required to build a text encoder")
            bert = BertModel(BertConfig(**config.bert_config), add_pooling_layer=False)
        self.config = config
        self.bert = bert
        self._capture = threading.local()
        for layer in self.bert.encoder.layer[-config.last_n_layers :]:
            layer.register_forward_hook(self._keep_layer_output)

    def _keep_layer_output(self, module: nn.Module, inputs: tuple, output) -> None:
        outputs = getattr(self._capture, "outputs", None)
        if outputs is not None:
            outputs.append(output[0] if isinstance(output, tuple) else output)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_capture", None)  # thread-local storage cannot be pickled; it is recreated empty
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._capture = threading.local()

    @property
    def hidden_size(self) -> int:
        return int(self.bert.config.hidden_size)

    def forward(self, text: TokenizedText, word_center: torch.Tensor | None = None) -> TextEncoderOutput:
        """Encode a tokenised batch; ``word_center`` (``[D]``) is subtracted from every word vector if given."""
        self._capture.outputs = captured = []
        try:
            self.bert(input_ids=text.input_ids, attention_mask=text.attention_mask)
        finally:
            self._capture.outputs = None
        if len(captured) != self.config.last_n_layers:
            raise RuntimeError(f"captured {len(captured)} layer outputs, expected {self.config.last_n_layers}")
        token_vectors = torch.stack(captured, dim=0).sum(dim=0)
        return aggregate_granularities(token_vectors, text, self.config.max_length, word_center)
