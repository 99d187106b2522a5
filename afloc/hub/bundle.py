"""What a loaded model is: the network with its tokenizer, image and output settings, card and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..imaging.transforms import Preprocessing
from ..localization.calibration import ZeroShotCalibration
from ..localization.heatmaps import LocalizationConfig
from ..localization.ood import OODSummary
from ..localization.zero_shot import ZeroShotConfig
from ..modeling.network import AFLoc
from ..settings import from_dict
from ..text.tokenizer import ReportTokenizer


@dataclass(frozen=True)
class ModelMetadata:
    """What a model was trained on, saved in ``preprocessing.json`` under ``"model"`` (read without the weights by
    :func:`read_model_info`; a directory written before it existed reads as the defaults).

    Attributes:
        synthetic_data: trained on synthetic images only (the demo then warns that real images are out of scope).
        findings: the findings its training data named, e.g. ``("covid_opacity", "active_tb")``; ``()`` = not
            recorded.
    """

    synthetic_data: bool = False
    findings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"synthetic_data": self.synthetic_data, "findings": list(self.findings)}

    @classmethod
    def from_dict(cls, data: dict | None) -> ModelMetadata:
        return from_dict(cls, data, "model metadata")


@dataclass
class ModelBundle:
    """Everything a model directory holds, ready for inference."""

    model: AFLoc
    tokenizer: ReportTokenizer
    preprocessing: Preprocessing
    localization: LocalizationConfig
    card: str
    path: Path | None = None
    metadata: ModelMetadata = field(default_factory=ModelMetadata)
    zero_shot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    calibration: ZeroShotCalibration | None = None  # calibration.json: Platt scaling of the zero-shot scores
    ood: OODSummary | None = None  # ood.safetensors: what the validation images' embeddings look like


def read_output_settings(extras: dict) -> tuple[LocalizationConfig, ZeroShotConfig]:
    """The heatmap and zero-shot settings of a ``preprocessing.json`` (or a checkpoint's ``afloc`` entry).

    Format 1 kept the zero-shot keys inside ``"localization"`` as ``classification_similarity`` and
    ``logit_scale``: they are moved to the zero-shot settings, so directories written before keep loading.
    """
    localization = dict(extras.get("localization") or {})
    zero_shot = dict(extras.get("zero_shot") or {})
    for old, new in (("classification_similarity", "similarity"), ("logit_scale", "logit_scale")):
        if old in localization:
            zero_shot.setdefault(new, localization.pop(old))
    return LocalizationConfig.from_dict(localization), ZeroShotConfig.from_dict(zero_shot)
