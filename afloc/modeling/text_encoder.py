"""Multi-granularity text encoder: word, sentence and report embeddings from a BERT."""

from __future__ import annotations

import threading

import torch
from torch import nn

from .config import TextEncoderConfig
from .types import TextEncoderOutput, TokenizedText


def aggregate_granularities(
    token_vectors: torch.Tensor,
    text: TokenizedText,
    max_length: int,
    word_center: torch.Tensor | None = None,
    word_transform: nn.Module | None = None,
) -> TextEncoderOutput:
    """Aggregate token vectors into words, sentences and the report with segment sums (no token loops).

    Args:
        token_vectors: ``[B, T, D]`` per-token vectors.
        text: the tokenised batch with ``word_ids`` / ``sentence_ids``.
        max_length: divisor of the report vector.
        word_center: ``[D]`` subtracted from every word vector (incl. [CLS] and [SEP]) before sentences and the
            report are formed (:attr:`afloc.modeling.config.TextEncoderConfig.center_words`); ``None`` = reference.
        word_transform: applied to every word vector (after centring) before sentences and the report are formed
            (:class:`TextAdapter`); ``None`` = reference. Sentences are then means of transformed word vectors.
    """
    if word_transform is not None:
        return _aggregate_from_words(token_vectors, text, max_length, word_center, word_transform)
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


def _aggregate_from_words(
    token_vectors: torch.Tensor,
    text: TokenizedText,
    max_length: int,
    word_center: torch.Tensor | None,
    word_transform: nn.Module,
) -> TextEncoderOutput:
    """:func:`aggregate_granularities` computed from (transformed) word vectors instead of token vectors.

    Without a transform this gives the same result as the token-based path (a sentence's mean word vector is its
    token sum over its word count); with one, sentences and the report see the transformed words.
    """
    batch, length, dim = token_vectors.shape
    valid = text.attention_mask.bool() & (text.word_ids >= 0)
    vectors = token_vectors * valid.unsqueeze(-1).to(token_vectors.dtype)
    word_index = text.word_ids.clamp(min=0)
    word_embeddings = torch.zeros_like(vectors).scatter_add_(1, word_index.unsqueeze(-1).expand(-1, -1, dim), vectors)
    num_words = (text.word_ids.max(dim=1).values + 1).clamp(min=0)  # includes [SEP]
    positions = torch.arange(length, device=token_vectors.device)
    word_mask = positions.unsqueeze(0) < (num_words - 1).clamp(min=1).unsqueeze(1)
    is_word = (positions.unsqueeze(0) < num_words.unsqueeze(1)).unsqueeze(-1).to(vectors.dtype)
    if word_center is not None:
        word_embeddings = word_embeddings - is_word * word_center.to(vectors.dtype)
    word_embeddings = word_transform(word_embeddings) * is_word  # padding words stay zero

    # the sentence of each word (all pieces of a word share it); -1 for "." delimiters, [SEP] and padding
    pieces_sentence = torch.where(valid, text.sentence_ids, torch.full_like(text.sentence_ids, -1))
    word_sentence = torch.full_like(text.sentence_ids, -1).scatter_reduce(
        1, word_index, pieces_sentence, reduce="amax", include_self=True
    )
    in_sentence = word_sentence >= 0
    num_sentences = int(text.sentence_ids.max().item()) + 1
    sentence_index = word_sentence.clamp(min=0)
    sums = torch.zeros(batch, num_sentences, dim, dtype=vectors.dtype, device=vectors.device)
    sums.scatter_add_(1, sentence_index.unsqueeze(-1).expand(-1, -1, dim), word_embeddings * in_sentence.unsqueeze(-1))
    counts = torch.zeros(batch, num_sentences, dtype=vectors.dtype, device=vectors.device)
    counts.scatter_add_(1, sentence_index, in_sentence.to(vectors.dtype))
    sentence_mask = counts > 0
    sentence_embeddings = sums / counts.clamp(min=1).unsqueeze(-1)
    report_embedding = word_embeddings.sum(dim=1) / max_length
    return TextEncoderOutput(word_embeddings, word_mask, sentence_embeddings, sentence_mask, report_embedding)


class TextAdapter(nn.Module):
    """Small trainable map on word vectors (:attr:`afloc.modeling.config.TextEncoderConfig.adapter`); the
    identity at start.

    Args:
        kind: ``"linear"`` (D x D matrix initialised to the identity, no bias) or ``"mlp"`` (``x + W2 gelu(W1
            LayerNorm(x))`` with ``W2`` initialised to zero).
        dim: word vector width D.
    """

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.linear = nn.Linear(dim, dim, bias=False)
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(dim))
        elif kind == "mlp":
            self.norm = nn.LayerNorm(dim)
            self.hidden = nn.Linear(dim, dim)
            self.output = nn.Linear(dim, dim)
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)
        else:
            raise ValueError(f"adapter kind must be 'linear' or 'mlp', got {kind!r}")

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` -> ``[..., D]``."""
        if self.kind == "linear":
            return self.linear(words)
        return words + self.output(torch.nn.functional.gelu(self.hidden(self.norm(words))))


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
        self._sentence_cache: dict | None = None
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

    def enable_cache(self, enabled: bool = True) -> None:
        """Cache the BERT's per-sentence token vectors (``context="sentence"`` only, for a frozen encoder).

        Each distinct sentence is then encoded once; later captions that contain it reuse the stored vectors
        (float32, on the device of the first call). Only valid while the weights do not change and dropout is
        off (eval mode): :meth:`forward` refuses a cached call in training mode.
        """
        if enabled and self.config.context != "sentence":
            raise ValueError("the sentence cache needs TextEncoderConfig.context='sentence'")
        self._sentence_cache = {} if enabled else None

    def _token_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]``: the sum of the last ``last_n_layers`` hidden layers."""
        self._capture.outputs = captured = []
        try:
            self.bert(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            self._capture.outputs = None
        if len(captured) != self.config.last_n_layers:
            raise RuntimeError(f"captured {len(captured)} layer outputs, expected {self.config.last_n_layers}")
        return torch.stack(captured, dim=0).sum(dim=0)

    def _sentencewise_token_vectors(self, text: TokenizedText) -> torch.Tensor:
        """Token vectors of ``context="sentence"``: every sentence encoded alone as ``[CLS] sentence [SEP]``.

        The caption's tokens then take their sentence's vectors; [CLS] takes the mean of its sentences' [CLS]
        vectors; each "." after sentence k and the final [SEP] take the [SEP] vector of the sentence before
        them. A caption without sentences is encoded as it is.
        """
        ids, mask, sentence_ids = text.input_ids, text.attention_mask.bool(), text.sentence_ids
        lengths = mask.sum(dim=1).tolist()
        cls_id = int(ids[0, 0])
        plans: list[list[tuple[int, ...]]] = []  # per caption: the token-id sequence of each sentence piece
        for b in range(ids.shape[0]):
            row, sentences = ids[b, : lengths[b]], sentence_ids[b, : lengths[b]]
            count = int(sentences.max().item())
            sep_id = int(row[-1])
            if count < 1:
                plans.append([tuple(row.tolist())])
                continue
            plans.append([(cls_id, *row[sentences == k].tolist(), sep_id) for k in range(1, count + 1)])
        cache = getattr(self, "_sentence_cache", None)
        if cache is not None and self.training:
            raise RuntimeError("the sentence cache is only valid in eval mode (no dropout)")
        store = cache if cache is not None else {}
        missing = list(dict.fromkeys(seq for plan in plans for seq in plan if seq not in store))
        if missing:
            width = max(len(seq) for seq in missing)
            batch_ids = torch.zeros(len(missing), width, dtype=ids.dtype, device=ids.device)
            batch_mask = torch.zeros(len(missing), width, dtype=text.attention_mask.dtype, device=ids.device)
            for i, seq in enumerate(missing):
                batch_ids[i, : len(seq)] = torch.tensor(seq, dtype=ids.dtype)
                batch_mask[i, : len(seq)] = 1
            vectors = self._token_vectors(batch_ids, batch_mask)
            for i, seq in enumerate(missing):
                store[seq] = vectors[i, : len(seq)].float().clone()
        rows = []
        for b, plan in enumerate(plans):
            pieces = [store[seq].to(ids.device) for seq in plan]
            if len(pieces) == 1 and int(sentence_ids[b].max().item()) < 1:
                row = pieces[0]
            else:
                parts = [torch.stack([p[0] for p in pieces]).mean(dim=0, keepdim=True)]
                for piece in pieces:
                    parts += [piece[1:-1], piece[-1:]]  # the sentence's tokens, then "." (or the final [SEP])
                row = torch.cat(parts, dim=0)
            if row.shape[0] != lengths[b]:  # e.g. a caption truncated right after a "."
                row = (
                    row[: lengths[b]]
                    if row.shape[0] > lengths[b]
                    else torch.cat([row, row[-1:].expand(lengths[b] - row.shape[0], -1)])
                )
            rows.append(row)
        out = torch.zeros(*ids.shape, rows[0].shape[-1], dtype=rows[0].dtype, device=rows[0].device)
        for b, row in enumerate(rows):
            out[b, : row.shape[0]] = row
        return out

    def forward(
        self,
        text: TokenizedText,
        word_center: torch.Tensor | None = None,
        word_transform: nn.Module | None = None,
    ) -> TextEncoderOutput:
        """Encode a tokenised batch.

        Args:
            text: the tokenised batch.
            word_center: ``[D]`` subtracted from every word vector if given.
            word_transform: trainable map on word vectors (:class:`TextAdapter`) if given.
        """
        if self.config.context == "sentence":
            token_vectors = self._sentencewise_token_vectors(text)
        else:
            token_vectors = self._token_vectors(text.input_ids, text.attention_mask)
        return aggregate_granularities(token_vectors, text, self.config.max_length, word_center, word_transform)
