"""Multi-level ResNet image encoder (shallow local, deep local, global)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .config import ImageEncoderConfig
from .types import ImageEncoderOutput


def _build_backbone(name: str) -> torchvision.models.ResNet:
    """A randomly initialised torchvision ResNet; ``resnet10`` = ResNet-18 with one basic block per stage."""
    if name == "resnet10":
        return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    return getattr(torchvision.models, name)(weights=None)


class ImageEncoder(nn.Module):
    """ResNet backbone without ``fc`` and three linear heads (no non-linearity, as in the reference).

    With ``config.shallow_head=False`` there is no layer2 head (GLoRIA's two-level encoder): the deep map is
    returned in place of the shallow one, so every consumer of :class:`ImageEncoderOutput` keeps working.

    Args:
        config: image encoder configuration.
        embedding_dim: joint width D (= the text encoder's hidden size).
    """

    def __init__(self, config: ImageEncoderConfig, embedding_dim: int) -> None:
        super().__init__()
        self.config = config
        backbone = _build_backbone(config.backbone)
        backbone.fc = nn.Identity()
        self.backbone = backbone
        shallow, deep, final = config.channels
        self.shallow_projection = (
            nn.Conv2d(shallow, embedding_dim, kernel_size=1, bias=False) if config.shallow_head else None
        )
        self.deep_projection = nn.Conv2d(deep, embedding_dim, kernel_size=1, bias=False)
        self.global_projection = nn.Linear(final, embedding_dim)
        if config.position_embeddings:
            shallow_side, deep_side = config.grid_sizes
            self.shallow_position = nn.Parameter(torch.zeros(embedding_dim, shallow_side, shallow_side))
            self.deep_position = nn.Parameter(torch.zeros(embedding_dim, deep_side, deep_side))
        else:
            self.shallow_position = self.deep_position = None

    def forward(self, images: torch.Tensor) -> ImageEncoderOutput:
        """Encode normalised images ``[B, 3, S, S]`` (mean = std = 0.5, i.e. range [-1, 1])."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
        if self.config.internal_size is not None and images.shape[-1] != self.config.internal_size:
            # reference quirk: 224 inputs are upsampled to 299 before conv1
            size = (self.config.internal_size, self.config.internal_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=True)
        net = self.backbone
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        x = net.layer1(x)
        shallow = net.layer2(x)
        deep = net.layer3(shallow)
        pooled = torch.flatten(net.avgpool(net.layer4(deep)), 1)
        patch_embeddings = self.deep_projection(deep)
        shallow_embeddings = self.shallow_projection(shallow) if self.shallow_projection is not None else None
        if self.deep_position is not None:
            if patch_embeddings.shape[-2:] != self.deep_position.shape[-2:]:
                raise ValueError(
                    f"position embeddings were built for a {tuple(self.deep_position.shape[-2:])} grid, the input "
                    f"gives {tuple(patch_embeddings.shape[-2:])}: images must be {self.config.image_size} px"
                )
            patch_embeddings = patch_embeddings + self.deep_position.to(patch_embeddings.dtype)
            if shallow_embeddings is not None:
                shallow_embeddings = shallow_embeddings + self.shallow_position.to(shallow_embeddings.dtype)
        return ImageEncoderOutput(
            shallow_patch_embeddings=shallow_embeddings if shallow_embeddings is not None else patch_embeddings,
            patch_embeddings=patch_embeddings,
            image_embedding=self.global_projection(pooled),
        )
