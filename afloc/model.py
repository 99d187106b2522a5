"""The AFLoc network: multi-level image encoder + multi-granularity text encoder."""

from __future__ import annotations

import torch
from torch import nn

from .config import AFLocConfig
from .image_encoder import ImageEncoder, ImageEncoderOutput
from .text import TokenizedText
from .text_encoder import TextEncoder, TextEncoderOutput


class AFLoc(nn.Module):
    """Tensors in, typed embeddings out. No file I/O or tokenisation inside.

    Build a model with pretrained text weights through :func:`afloc.build_model`; ``AFLoc(config)`` alone gives
    random weights of the architecture described by ``config`` (``config.text.bert_config`` must be set).

    Args:
        config: architecture configuration.
        text_backbone: optional pre-built ``transformers`` BERT (e.g. loaded with pretrained weights).
    """

    def __init__(self, config: AFLocConfig, text_backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = TextEncoder(config.text, text_backbone)
        if config.text.bert_config is not None and self.text_encoder.hidden_size != config.embedding_dim:
            raise ValueError(
                f"text backbone hidden size {self.text_encoder.hidden_size} != config hidden size "
                f"{config.embedding_dim}"
            )
        self.image_encoder = ImageEncoder(config.image, self.text_encoder.hidden_size)

    @property
    def embedding_dim(self) -> int:
        return self.text_encoder.hidden_size

    def encode_image(self, images: torch.Tensor) -> ImageEncoderOutput:
        """Encode normalised images ``[B, 3, S, S]`` (pad-resized, mean = std = 0.5)."""
        return self.image_encoder(images)

    def encode_text(self, text: TokenizedText) -> TextEncoderOutput:
        """Encode a tokenised batch (see :class:`afloc.text.ReportTokenizer`)."""
        return self.text_encoder(text)

    def save_pretrained(self, directory, tokenizer, **kwargs):
        """Write a model directory; see :func:`afloc.checkpoint.save_pretrained` for the arguments."""
        from .checkpoint import save_pretrained

        return save_pretrained(self, directory, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, path, device: str | torch.device = "cpu") -> AFLoc:
        """Load the network of a model directory (strict, safetensors, CPU by default).

        Use :func:`afloc.load_model` to also get the tokenizer, preprocessing and model card.
        """
        from .checkpoint import load_pretrained

        return load_pretrained(path, device=device).model

    def forward(self, images: torch.Tensor, text: TokenizedText) -> tuple[ImageEncoderOutput, TextEncoderOutput]:
        return self.encode_image(images), self.encode_text(text)
