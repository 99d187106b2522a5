"""AFLoc: annotation-free pathology localization with multi-level vision-language contrastive learning.

The core library. It never imports lightning or gradio. The names here are its public API, one per concept:

* inference: :class:`AFLocPredictor` (image + prompts -> heatmaps and zero-shot scores) and the
  :class:`EncodedImage` it returns; :func:`load_image` reads PNG/JPEG/TIFF/DICOM safely;
* model directories: :func:`load_pretrained` -> :class:`ModelBundle`, :func:`save_pretrained`;
* the network and its settings: :class:`AFLoc`, :func:`build_model`, :class:`AFLocConfig` with
  :class:`ImageEncoderConfig`, :class:`TextEncoderConfig` and :class:`LossConfig`, the training loss
  :class:`AFLocLoss`, :func:`load_tokenizer`;
* image and heatmap settings: :class:`Preprocessing`, :class:`LocalizationConfig`.

Everything else lives in the submodules (``afloc.modeling.losses``, ``afloc.localization.metrics``,
``afloc.imaging.transforms``, ...).
"""

from .hub.building import build_model
from .hub.bundle import ModelBundle
from .hub.format import load_pretrained, save_pretrained
from .imaging.io import load_image
from .imaging.transforms import Preprocessing
from .localization.heatmaps import LocalizationConfig
from .modeling.config import AFLocConfig, ImageEncoderConfig, LossConfig, TextEncoderConfig
from .modeling.losses import AFLocLoss
from .modeling.network import AFLoc
from .predictor import AFLocPredictor, EncodedImage
from .text.tokenizer import load_tokenizer

__all__ = [
    "AFLoc",
    "AFLocConfig",
    "AFLocLoss",
    "AFLocPredictor",
    "EncodedImage",
    "ImageEncoderConfig",
    "LocalizationConfig",
    "LossConfig",
    "ModelBundle",
    "Preprocessing",
    "TextEncoderConfig",
    "build_model",
    "load_image",
    "load_pretrained",
    "load_tokenizer",
    "save_pretrained",
]
__version__ = "0.1.0"
