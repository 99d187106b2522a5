"""How zero-shot probabilities are scored: a setting of its own, saved in ``preprocessing.json`` under
``"zero_shot"`` (model directories of format 1 kept it inside ``"localization"``; they still load)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from ..settings import from_dict
from .heatmaps import SIMILARITIES


@dataclass(frozen=True)
class ZeroShotConfig:
    """Attributes:
    similarity: scores are ``"cosine"`` x ``logit_scale`` (the training calibration, default) or the reference's
        raw ``"dot"`` product of the global image embedding with the mean report vector of each prompt set; or
        ``"gloria"``: GLoRIA's own score of each prompt, (global cosine + local word-context similarity) / 2
        (:func:`afloc.localization.gloria.zero_shot_score`), a prompt set scoring the maximum over its prompts as
        in GLoRIA's zero-shot classification; ``logit_scale`` is not used.
    logit_scale: scale of the cosine scores before the positive / negative softmax.
    """

    similarity: Literal["dot", "cosine", "gloria"] = "cosine"
    logit_scale: float = 10.0

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"zero-shot similarity must be 'dot', 'cosine' or 'gloria', got {self.similarity!r}")
        if not self.logit_scale > 0:
            raise ValueError(f"zero-shot logit_scale must be > 0, got {self.logit_scale}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> ZeroShotConfig:
        return from_dict(cls, data, "zero-shot")
