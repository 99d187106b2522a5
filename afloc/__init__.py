"""AFLoc: annotation-free pathology localization with multi-level vision-language contrastive learning.

The core library. It never imports lightning or gradio.
"""

from .checkpoint import ModelBundle, load_pretrained, save_pretrained
from .config import AFLocConfig, ImageEncoderConfig, LossConfig, TextEncoderConfig
from .factory import build_model
from .image_encoder import ImageEncoderOutput
from .io import load_image, load_image_with_info
from .localization import LocalizationConfig
from .losses import AFLocLoss, global_contrastive_loss, local_contrastive_loss
from .model import AFLoc
from .predictor import AFLocPredictor, EncodedImage
from .text import ReportTokenizer, TokenizedText, load_tokenizer, normalize_prompt, sample_caption, split_sentences
from .text_encoder import TextEncoderOutput
from .transforms import PadResizeMapping, Preprocessing, pad_resize

load_model = load_pretrained

__all__ = [
    "AFLoc",
    "AFLocPredictor",
    "EncodedImage",
    "LocalizationConfig",
    "ModelBundle",
    "PadResizeMapping",
    "Preprocessing",
    "load_image",
    "load_image_with_info",
    "load_model",
    "load_pretrained",
    "pad_resize",
    "save_pretrained",
    "AFLocConfig",
    "AFLocLoss",
    "ImageEncoderConfig",
    "ImageEncoderOutput",
    "LossConfig",
    "ReportTokenizer",
    "TextEncoderConfig",
    "TextEncoderOutput",
    "TokenizedText",
    "build_model",
    "global_contrastive_loss",
    "load_tokenizer",
    "local_contrastive_loss",
    "normalize_prompt",
    "sample_caption",
    "split_sentences",
]
__version__ = "0.1.0"
