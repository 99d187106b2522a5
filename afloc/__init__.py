"""AFLoc: annotation-free pathology localization with multi-level vision-language contrastive learning.

The core library. It never imports lightning or gradio.
"""

from .config import AFLocConfig, ImageEncoderConfig, LossConfig, TextEncoderConfig
from .factory import build_model
from .image_encoder import ImageEncoderOutput
from .losses import AFLocLoss, global_contrastive_loss, local_contrastive_loss
from .model import AFLoc
from .text import ReportTokenizer, TokenizedText, load_tokenizer, normalize_prompt, sample_caption, split_sentences
from .text_encoder import TextEncoderOutput

__all__ = [
    "AFLoc",
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
