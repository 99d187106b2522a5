"""The AFLoc network: multi-level image encoder + multi-granularity text encoder."""

from __future__ import annotations

import torch
from torch import nn

from .config import AFLocConfig
from .image_encoder import ImageEncoder
from .text_encoder import TextAdapter, TextEncoder
from .types import ImageEncoderOutput, TextEncoderOutput, TokenizedText


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
        # kept outside ``text_encoder`` so that a frozen encoder's weights stay identical to their source
        self.word_center: torch.Tensor | None
        if config.text.center_words:
            self.register_buffer("word_center", torch.zeros(self.text_encoder.hidden_size))
        else:
            self.word_center = None
        # also outside ``text_encoder``: with a frozen encoder only the adapter is trained and exported
        self.text_adapter = (
            TextAdapter(config.text.adapter, self.text_encoder.hidden_size) if config.text.adapter != "none" else None
        )

    @property
    def embedding_dim(self) -> int:
        return self.text_encoder.hidden_size

    def encode_image(self, images: torch.Tensor) -> ImageEncoderOutput:
        """Encode normalised images ``[B, 3, S, S]`` (pad-resized, mean = std = 0.5)."""
        return self.image_encoder(images)

    def encode_text(self, text: TokenizedText) -> TextEncoderOutput:
        """Encode a tokenised batch (see :class:`afloc.text.tokenizer.ReportTokenizer`)."""
        return self.text_encoder(text, self.word_center, self.text_adapter)

    @torch.no_grad()
    def set_word_center(self, texts: list[TokenizedText]) -> torch.Tensor:
        """Set ``word_center`` to the mean word vector (all words, [CLS] and [SEP] included) of ``texts``.

        Only for models built with ``config.text.center_words``; meant for a frozen text encoder, whose word
        vectors do not change afterwards. Returns the new centre.
        """
        if self.word_center is None:
            raise ValueError("this model was built without center_words; it has no word_center to set")
        total = torch.zeros_like(self.word_center, dtype=torch.float64)
        count = 0
        was_training = self.text_encoder.training
        self.text_encoder.eval()  # no dropout: the centre is a property of the encoder, not of a random mask
        try:
            outputs = [self.text_encoder(text) for text in texts]
        finally:
            self.text_encoder.train(was_training)
        for text, out in zip(texts, outputs, strict=True):
            num_words = (text.word_ids.max(dim=1).values + 1).clamp(min=0)
            positions = torch.arange(out.word_embeddings.shape[1], device=num_words.device)
            is_word = positions.unsqueeze(0) < num_words.unsqueeze(1)
            total += out.word_embeddings[is_word].double().sum(dim=0)
            count += int(is_word.sum())
        if count == 0:
            raise ValueError("no words to average")
        self.word_center.copy_((total / count).to(self.word_center.dtype))
        return self.word_center

    def forward(self, images: torch.Tensor, text: TokenizedText) -> tuple[ImageEncoderOutput, TextEncoderOutput]:
        return self.encode_image(images), self.encode_text(text)
