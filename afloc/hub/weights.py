"""Loading a pretrained BERT for the text encoder quietly: no pooler, no alarming "LOAD REPORT" on start-up.

Imported only when pretrained text weights are loaded (it imports ``transformers``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from transformers import BertModel
from transformers.utils import logging as hf_logging

# What a pretrained BERT checkpoint holds that the text encoder never uses: the pooler (AFLoc reads token states
# only, so BERT is built without it) and a masked-LM / next-sentence head ("cls.*", e.g. Bio_ClinicalBERT).
# transformers would otherwise print a "LOAD REPORT" table calling them UNEXPECTED on every start; any other
# mismatch is still reported.
UNUSED_BERT_KEYS = (r"(^|\.)pooler\.", r"^cls\.")


class PoolerFreeBertModel(BertModel):
    """``BertModel(add_pooling_layer=False)`` that expects a checkpoint's pooler / LM-head weights and skips them."""

    _keys_to_ignore_on_load_unexpected = list(UNUSED_BERT_KEYS)


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar for one load, then restore the user's setting."""
    enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_pretrained_bert(path: str, local_files_only: bool) -> BertModel:
    """The BERT at ``path`` (a local directory, or a hub id when ``local_files_only`` is false), without pooler.

    Raises:
        ValueError: nothing loadable at ``path``.
    """
    try:
        with _no_progress_bar():
            return PoolerFreeBertModel.from_pretrained(path, local_files_only=local_files_only, add_pooling_layer=False)
    except OSError as error:
        raise ValueError(f"could not load a BERT text encoder from {path!r}: {error}") from error
