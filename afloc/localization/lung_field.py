"""A lung-field gate for chest heatmaps, learned from synthetic films only.

On real films the chest models rank the pixels *inside* the lungs well but also put heat on the film's other dense
parts (heart, diaphragm, abdomen, shoulders): ``docs/real_data_experiments.md``, round 12. A lung field keeps a
chest map on the lungs: the map, scaled to [0, 1], is multiplied by the field's probability that a pixel is lung,
then scaled back to [-1, 1].

The field is a small U-Net trained only on PhantomCXR films, whose lung outlines are known by construction
(``python -m training lung-field``): no real film and no annotation of a real film teaches it. Its input is the
model-space film (pad-resized, grey), histogram-equalised at :attr:`LungField.size` pixels, so that the
synthetic films' and real films' grey levels meet. It knows the lungs' shape, not what is in them, so a lung
white with consolidation stays lung as long as its outline shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .heatmaps import scale_to_unit_range

WEIGHTS = "lung_field.safetensors"
CONFIG = "lung_field.json"


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class LungFieldNet(nn.Module):
    """A four-level U-Net, ``[B, 1, S, S]`` grey film -> ``[B, 1, S, S]`` lung logits (S divisible by 8)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.e1, self.e2, self.e3, self.e4 = _block(1, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 8 * w)
        self.d3, self.d2, self.d1 = _block(12 * w, 4 * w), _block(6 * w, 2 * w), _block(3 * w, w)
        self.out = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        e4 = self.e4(F.max_pool2d(e3, 2))
        d3 = self.d3(torch.cat([_up(e4), e3], 1))
        d2 = self.d2(torch.cat([_up(d3), e2], 1))
        return self.out(self.d1(torch.cat([_up(d2), e1], 1)))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def equalize(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation of a grey ``[H, W]`` image in [0, 1] (256 bins), float32 in [0, 1]."""
    import cv2

    grey = np.clip(np.rint(np.nan_to_num(image) * 255.0), 0, 255).astype(np.uint8)
    return cv2.equalizeHist(grey).astype(np.float32) / 255.0


def prepare(image: np.ndarray, size: int) -> np.ndarray:
    """The field's input: a model-space film (``[S, S]`` or ``[S, S, 3]`` in [0, 1]) made grey, resized to
    ``size`` and histogram-equalised."""
    import cv2

    image = np.asarray(image, dtype=np.float32)
    grey = image.mean(axis=-1) if image.ndim == 3 else image
    return equalize(cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA))


class LungField:
    """A trained :class:`LungFieldNet` and its input size; call it on model-space films to get their gates.

    Args:
        net: the network (put in eval mode, kept on the CPU: it is small).
        size: the side the network sees (the gate is resized back to the film's side).
        width: the network's width (saved so that :meth:`load` can rebuild it).
        threshold: None = the gate is the lung probability itself (soft); a value in (0, 1) = the gate is 1 where
            the probability exceeds it and 0 elsewhere (a hard lung field, like an expert's lung mask).
    """

    def __init__(self, net: LungFieldNet, size: int = 128, width: int = 16, threshold: float | None = None) -> None:
        if size % 8:
            raise ValueError(f"the lung field's size must be divisible by 8, got {size}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"the lung field's threshold must be in (0, 1) or None, got {threshold}")
        self.net, self.size, self.width, self.threshold = net.eval(), size, width, threshold

    def with_threshold(self, threshold: float | None) -> LungField:
        """The same network with another gate rule (None: soft)."""
        return LungField(self.net, self.size, self.width, threshold)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Lung probabilities ``[B, S, S]`` in [0, 1] of a batch of model-space films ``[B, S, S]`` (grey) or
        ``[B, S, S, 3]``, in [0, 1]."""
        import cv2

        images = np.asarray(images, dtype=np.float32)
        if images.ndim not in (3, 4) or images.shape[1] != images.shape[2]:
            raise ValueError(f"expected square films [B, S, S] or [B, S, S, 3], got {images.shape}")
        side = images.shape[1]
        inputs = torch.from_numpy(np.stack([prepare(image, self.size) for image in images]))[:, None]
        with torch.inference_mode():
            probabilities = torch.sigmoid(self.net(inputs))[:, 0].numpy()
        gates = np.clip(
            np.stack([cv2.resize(p, (side, side), interpolation=cv2.INTER_LINEAR) for p in probabilities]), 0, 1
        )
        return gates if self.threshold is None else (gates > self.threshold).astype(np.float32)

    def save(self, folder: str | Path) -> Path:
        """Write ``lung_field.safetensors`` and ``lung_field.json`` into ``folder``; returns the weights' path."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        save_file(state, str(folder / WEIGHTS))
        config = {"size": self.size, "width": self.width, "threshold": self.threshold}
        (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return folder / WEIGHTS

    @classmethod
    def load(cls, folder: str | Path) -> LungField:
        """Read a field written by :meth:`save`.

        Raises:
            ValueError: the folder has no field, or its files do not describe one.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            raise ValueError(f"{folder}: no lung field ({WEIGHTS} and {CONFIG})")
        try:
            config = json.loads((folder / CONFIG).read_text())
            size, width = int(config["size"]), int(config["width"])
            threshold = config.get("threshold")
            threshold = None if threshold is None else float(threshold)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{folder / CONFIG}: not a lung-field config ({error})") from error
        if not (8 <= size <= 512 and 1 <= width <= 64):  # bounds the network's cost (width 64: 7.5 M parameters)
            raise ValueError(f"{folder / CONFIG}: size {size} or width {width} out of range")
        net = LungFieldNet(width)
        expected = 4 * sum(t.numel() for t in net.state_dict().values())
        if (folder / WEIGHTS).stat().st_size > 2 * expected + 1_000_000:  # float32 weights and a small header
            raise ValueError(f"{folder / WEIGHTS}: {(folder / WEIGHTS).stat().st_size} bytes, far more than a "
                             f"width-{width} lung field's {expected}; not read")  # fmt: skip
        try:
            net.load_state_dict(load_file(str(folder / WEIGHTS)))
        except (RuntimeError, OSError) as error:
            raise ValueError(f"{folder / WEIGHTS}: weights do not fit a width-{width} lung field ({error})") from error
        try:
            return cls(net, size, width, threshold)
        except ValueError as error:
            raise ValueError(f"{folder / CONFIG}: {error}") from error

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / WEIGHTS).is_file()


def films_from_tensors(tensors: torch.Tensor, mean, std) -> np.ndarray:
    """Preprocessed images ``[B, C, S, S]`` back to grey model-space films ``[B, S, S]`` in [0, 1] (the
    normalisation ``(x - mean) / std`` undone, channels averaged)."""
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (tensors.detach().float().cpu() * std + mean).clamp(0.0, 1.0).mean(dim=1).numpy()


def gate_heatmaps(maps: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """Maps ``[K, S, S]`` on [-1, 1] (NaN kept) scaled to [0, 1], multiplied by ``gate`` ``[S, S]`` in [0, 1], and
    scaled back to [-1, 1] per map. A gate of ones returns the maps unchanged."""
    maps = np.asarray(maps, dtype=np.float32)
    gate = np.asarray(gate, dtype=np.float32)
    if gate.shape != maps.shape[-2:]:
        raise ValueError(f"gate {gate.shape} does not match the maps {maps.shape[-2:]}")
    return scale_to_unit_range((maps + 1.0) / 2.0 * gate[None])
