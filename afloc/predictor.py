"""Inference engine: encode an image once, answer many prompts (heatmaps, zero-shot probabilities)."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .hub.bundle import ModelBundle, ModelMetadata
from .hub.format import load_pretrained
from .imaging.transforms import PadResizeMapping, Preprocessing
from .localization import gloria
from .localization.calibration import ZeroShotCalibration, uncalibrated_probability
from .localization.field_of_view import check_modality, retina_gates
from .localization.heatmaps import LocalizationConfig, heatmaps_from_embeddings
from .localization.lung_field import LungField, films_from_tensors, gate_heatmaps
from .localization.ood import OODSummary, ood_features
from .localization.zero_shot import ZeroShotConfig
from .modeling.network import AFLoc
from .modeling.types import ImageEncoderOutput, TextEncoderOutput
from .text.prompts import classification_prompts, covers, unseen_findings
from .text.tokenizer import ReportTokenizer, normalize_prompt

MAX_PROMPT_CHARS = 1000
HEATMAP_CACHE_BYTES = 32 << 20
"""Default bound of an :class:`EncodedImage`'s heatmap cache (model-space maps: 160 prompts at 224 px)."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A user's device string as a ``torch.device`` (None: CUDA when available, else the CPU).

    Raises:
        ValueError: naming the string, when torch does not know it or when it asks for a GPU this machine lacks
            (instead of torch's RuntimeError or a failure deep inside the first forward pass).
    """
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {str(device)!r}: expected cpu, cuda, cuda:N, mps, ... ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asks for a CUDA GPU, but none is available here; use cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} asks for Apple's MPS, which is not available here; use cpu")
    return resolved


@dataclass
class EncodedImage:
    """One image's embeddings and geometry, produced by :meth:`AFLocPredictor.encode_image`.

    Holds its own heatmap cache, so a web server keeps one per session: nothing is shared between images. The
    cache keeps model-space heatmaps (``S x S`` float32, e.g. 200 KB at 224) in least-recently-used order, bounded
    by ``heatmap_cache_bytes``; heatmaps on the original pixels are upsampled from them on demand.

    Attributes:
        image: the original image, float32 ``[H, W]`` or ``[H, W, 3]`` in [0, 1].
        mapping: pad-resize geometry between original and model pixels.
        patch_embeddings: ``[D, h, w]`` deep-map embeddings (CPU).
        shallow_patch_embeddings: ``[D, h2, w2]`` shallow-map embeddings (CPU).
        image_embedding: ``[D]`` global embedding (CPU).
        ood_score: how unlike the model's validation images this image is (:class:`afloc.localization.ood.OODSummary`;
            None when the model has no summary).
        out_of_distribution: ``ood_score`` over the summary's threshold (its validation images' 99th percentile):
            the heatmap and zero-shot scores are not meaningful for this image. None when not known.
        gate: ``[S, S]`` model-space gate in [0, 1] that every heatmap of this image is multiplied by
            (:meth:`AFLocPredictor.image_gates`: the lung field's probabilities, or a fundus photograph's field of
            view); None when the predictor gates nothing.
    """

    image: np.ndarray
    mapping: PadResizeMapping
    patch_embeddings: torch.Tensor
    shallow_patch_embeddings: torch.Tensor
    image_embedding: torch.Tensor
    ood_score: float | None = None
    out_of_distribution: bool | None = None
    gate: np.ndarray | None = field(default=None, repr=False)
    heatmap_cache_bytes: int = field(default=HEATMAP_CACHE_BYTES, repr=False)
    _heatmaps: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def _remember(self, heatmaps: dict[str, np.ndarray]) -> None:
        """Add model-space heatmaps to the cache, dropping the least recently used beyond the byte bound."""
        self._heatmaps.update(heatmaps)
        total = sum(h.nbytes for h in self._heatmaps.values())
        while total > self.heatmap_cache_bytes and len(self._heatmaps) > 1:
            total -= self._heatmaps.popitem(last=False)[1].nbytes

    @property
    def cached_heatmap_bytes(self) -> int:
        """Bytes held by the heatmap cache."""
        return sum(h.nbytes for h in self._heatmaps.values())

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


@dataclass(frozen=True)
class ZeroShotResult:
    """One finding's zero-shot answer.

    Attributes:
        probability: calibrated probability (Platt scaling fitted on validation images); None when the model has
            no calibration for this finding (then only ``uncalibrated`` exists, a score, not a probability).
        uncalibrated: the raw softmax over the positive and negative prompt sets.
        seen_in_training: whether the model's training reports named this finding (None: not recorded).
    """

    finding: str
    probability: float | None
    uncalibrated: float
    seen_in_training: bool | None


def _as_prompt_list(prompts: str | Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompt given")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise ValueError(f"prompts must be strings, got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
    return prompts


class AFLocPredictor:
    """Encode an image once, then localize many prompts and classify findings (SAM-style).

    Coordinates: heatmaps are returned on the original image's pixel grid ``[H, W]`` (row, column), or in the
    ``S x S`` model space with ``space="model"``. Values are on [-1, 1] (min-max per prompt), NaN where
    undefined (the optional margin).

    Thread safety: the model is only run in inference mode and the text-embedding cache is locked, so one
    predictor can serve many threads; keep one :class:`EncodedImage` per user (``set_image`` is a convenience
    for single-user scripts and is *not* meant to be shared between threads).

    Args:
        model: the network (moved to ``device`` and put in eval mode).
        tokenizer: its tokenizer.
        preprocessing: image geometry and normalisation the model was trained with.
        localization: heatmap settings.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        text_cache_size: prompt embeddings kept (LRU).
        zero_shot: how :meth:`classify` scores (default :class:`ZeroShotConfig`).
        calibration: per-finding Platt scaling of the zero-shot scores (``calibration.json``); None = uncalibrated.
        ood: the validation images' embedding summary (``ood.safetensors``): :meth:`encode_image` then sets
            ``ood_score`` and ``out_of_distribution`` on every image; None = not known.
        metadata: what the model was trained on (the findings its reports named: :meth:`zero_shot_results`).
        lung_field: a chest lung-field gate (``lung_field.safetensors`` in the model folder): every heatmap is
            multiplied by the film's lung probabilities (:func:`afloc.localization.lung_field.gate_heatmaps`); None =
            ungated maps.
    """

    def __init__(
        self,
        model: AFLoc,
        tokenizer: ReportTokenizer,
        preprocessing: Preprocessing | None = None,
        localization: LocalizationConfig | None = None,
        device: str | torch.device | None = None,
        text_cache_size: int = 512,
        zero_shot: ZeroShotConfig | None = None,
        calibration: ZeroShotCalibration | None = None,
        ood: OODSummary | None = None,
        metadata: ModelMetadata | None = None,
        lung_field: LungField | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing or Preprocessing(image_size=model.config.image.image_size)
        self.localization = localization or LocalizationConfig()
        self.zero_shot = zero_shot or ZeroShotConfig()
        self.calibration, self.ood, self.metadata = calibration, ood, metadata or ModelMetadata()
        if lung_field is not None and self.preprocessing.modality == "fundus":
            raise ValueError("a lung field gates chest films; this model reads fundus photographs")
        check_modality(self.localization.field_of_view, self.preprocessing.modality)
        self.lung_field = lung_field
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._lock = threading.Lock()
        self._current: EncodedImage | None = None

    @classmethod
    def from_bundle(
        cls, bundle: ModelBundle, device: str | torch.device | None = None, lung_field: LungField | None = None
    ) -> AFLocPredictor:
        return cls(
            bundle.model,
            bundle.tokenizer,
            bundle.preprocessing,
            bundle.localization,
            device,
            zero_shot=bundle.zero_shot,
            calibration=bundle.calibration,
            ood=bundle.ood,
            metadata=bundle.metadata,
            lung_field=lung_field,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> AFLocPredictor:
        """Load a model directory (or our Lightning checkpoint) and wrap it; a model directory's lung field
        (``lung_field.safetensors``) comes with it."""
        field = LungField.load(path) if Path(path).is_dir() and LungField.exists(path) else None
        return cls.from_bundle(load_pretrained(path), device, field)

    # ---------------------------------------------------------------- images
    def with_localization(self, **changes) -> AFLocPredictor:
        """A predictor with other heatmap settings (``LocalizationConfig`` fields) that shares this one's model and
        tokenizer; this predictor is left as it is (the demo shares predictors between sessions).

        Raises:
            ValueError: an unknown field or an invalid value (from :class:`LocalizationConfig`).
        """
        localization = _replaced(self.localization, changes, "localization")
        return self._sharing(localization, self.zero_shot, self.calibration, self.lung_field)

    def with_zero_shot(self, **changes) -> AFLocPredictor:
        """A predictor with other zero-shot settings (``ZeroShotConfig`` fields), sharing this one's model; the
        calibration is dropped (it was fitted to the other scores).

        Raises:
            ValueError: an unknown field or an invalid value (from :class:`ZeroShotConfig`).
        """
        return self._sharing(self.localization, _replaced(self.zero_shot, changes, "zero-shot"), None, self.lung_field)

    def with_lung_field(self, lung_field: LungField | None) -> AFLocPredictor:
        """A predictor whose heatmaps are gated by ``lung_field`` (None: ungated), sharing this one's model."""
        return self._sharing(self.localization, self.zero_shot, self.calibration, lung_field)

    def _sharing(
        self,
        localization: LocalizationConfig,
        zero_shot: ZeroShotConfig,
        calibration: ZeroShotCalibration | None,
        lung_field: LungField | None,
    ) -> AFLocPredictor:
        return AFLocPredictor(
            self.model, self.tokenizer, self.preprocessing, localization, self.device, self._text_cache_size,
            zero_shot, calibration, self.ood, self.metadata, lung_field,
        )  # fmt: skip

    def encode_image(self, image: np.ndarray | str | Path | bytes) -> EncodedImage:
        """Encode an image: an array (float in [0, 1] or uint8; ``[H, W]`` or ``[H, W, 3]``) or anything
        :func:`afloc.imaging.io.load_image` reads (path, bytes, file-like; DICOM detected by content)."""
        if not isinstance(image, np.ndarray):
            from .imaging.io import load_image

            image = load_image(image)
        image = _as_float_image(image)
        tensor, mapping = self.preprocessing(image)
        out = self.encode_images(tensor.unsqueeze(0))
        encoded = EncodedImage(
            image=image,
            mapping=mapping,
            patch_embeddings=out.patch_embeddings[0].float().cpu(),
            shallow_patch_embeddings=out.shallow_patch_embeddings[0].float().cpu(),
            image_embedding=out.image_embedding[0].float().cpu(),
        )
        gates = self.image_gates(tensor.unsqueeze(0))
        if gates is not None:
            encoded.gate = gates[0]
        if self.ood is not None:
            encoded.ood_score = self.ood.score(ood_features(encoded.patch_embeddings))
            encoded.out_of_distribution = self.ood.is_out(encoded.ood_score)
        return encoded

    def encode_images(self, tensors: torch.Tensor) -> ImageEncoderOutput:
        """Encode a batch of preprocessed images ``[B, 3, S, S]`` (made by :attr:`preprocessing`): the batch entry
        point of the evaluation. Returns the embeddings as float32 on the CPU."""
        with torch.inference_mode():
            out = self.model.encode_image(tensors.to(self.device))
        return ImageEncoderOutput(**{f.name: getattr(out, f.name).float().cpu() for f in dataclasses.fields(out)})

    def image_gates(self, tensors: torch.Tensor) -> np.ndarray | None:
        """``[B, S, S]`` gates in [0, 1] of a batch of preprocessed images that every heatmap of the image is
        multiplied by: the lung field's probabilities (chest, with a lung field), the field of view (fundus, with
        ``localization.field_of_view``), or None (ungated)."""
        if self.lung_field is not None:
            return self.lung_gates(tensors)
        if self.localization.field_of_view:
            return retina_gates(tensors, self.preprocessing.mean, self.preprocessing.std)
        return None

    def lung_gates(self, tensors: torch.Tensor) -> np.ndarray | None:
        """``[B, S, S]`` lung probabilities of a batch of preprocessed images (undoing the normalisation to see the
        films as the model did), or None without a lung field."""
        if self.lung_field is None:
            return None
        return self.lung_field(films_from_tensors(tensors, self.preprocessing.mean, self.preprocessing.std))

    def set_image(self, image: np.ndarray | str | Path | bytes) -> EncodedImage:
        """Encode ``image`` and make it the default for :meth:`localize` / :meth:`classify`."""
        self._current = self.encode_image(image)
        return self._current

    def _image(self, image: EncodedImage | None) -> EncodedImage:
        image = image or self._current
        if image is None:
            raise ValueError("no image: call set_image() first or pass an EncodedImage")
        return image

    # ---------------------------------------------------------------- text
    def embed_prompts(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Report vectors ``[K, D]`` (CPU, float32) of prompts normalised like training captions; cached."""
        rule = self.localization.prompt_rule
        normalized = [normalize_prompt(p, rule) for p in _as_prompt_list(prompts)]
        with self._lock:
            found = {p: self._text_cache[p] for p in normalized if p in self._text_cache}
        missing = [p for p in dict.fromkeys(normalized) if p not in found]
        if missing:
            vectors = self._encode_texts(missing).report_embedding.float().cpu()  # normalising again: no change
            found.update(zip(missing, vectors, strict=True))
            with self._lock:
                for prompt, vector in zip(missing, vectors, strict=True):
                    self._text_cache[prompt] = vector
                while len(self._text_cache) > self._text_cache_size:
                    self._text_cache.popitem(last=False)
        return torch.stack([found[p] for p in normalized])

    def _encode_texts(self, prompts: str | Sequence[str]) -> TextEncoderOutput:
        """The text encoder's output (on the model's device) for prompts normalised like :meth:`embed_prompts`
        (uncached)."""
        rule = self.localization.prompt_rule
        normalized = [normalize_prompt(p, rule) for p in _as_prompt_list(prompts)]
        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(normalized).to(self.device))

    @staticmethod
    def _query_words(out: TextEncoderOutput) -> list[torch.Tensor]:
        """Per prompt, ``[n, D]`` on the CPU: [CLS] and the prompt's words, without [SEP] or padding."""
        words, mask = out.word_embeddings.float().cpu(), out.word_mask.cpu()
        return [words[i][mask[i]] for i in range(len(words))]

    def prompt_words(self, prompts: str | Sequence[str]) -> list[torch.Tensor]:
        """Per prompt, its word vectors ``[n, D]`` (CPU, float32): [CLS] and the prompt's words, without [SEP] or
        padding, normalised like :meth:`embed_prompts` (the query of GLoRIA's word attention)."""
        return self._query_words(self._encode_texts(prompts))

    def gloria_scores(self, prompts: str | Sequence[str], image: EncodedImage | None = None) -> np.ndarray:
        """GLoRIA's own zero-shot score of each prompt for ``image`` ``[K]``: (global cosine + local) / 2, the local
        similarity over the word columns GLoRIA's released code compares (:func:`afloc.localization.gloria.
        zero_shot_columns`: as many columns after [CLS] as the raw prompt has characters, so [SEP] and zero
        padding columns too, up to ``max_length - 1``)."""
        encoded = self._image(image)
        prompt_list = _as_prompt_list(prompts)
        out = self._encode_texts(prompt_list)
        words, reports = out.word_embeddings.float().cpu(), out.report_embedding.float().cpu()
        scores = []
        for i, prompt in enumerate(prompt_list):
            count = gloria.zero_shot_columns(prompt, int(out.word_mask[i].sum()) - 1, self.tokenizer.max_length)
            columns = torch.zeros(count, words.shape[-1])
            available = words[i, 1 : 1 + count]  # [SEP] and zero padding after the words, as in GLoRIA's layout
            columns[: available.shape[0]] = available
            score = gloria.zero_shot_score(encoded.image_embedding, encoded.patch_embeddings, reports[i], columns)
            scores.append(float(score))
        return np.asarray(scores, dtype=np.float64)

    # ---------------------------------------------------------------- outputs
    def model_space_heatmaps(
        self,
        patch_embeddings: torch.Tensor,
        shallow_patch_embeddings: torch.Tensor,
        prompts: Sequence[str],
        localization: LocalizationConfig | None = None,
        gate: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[K, S, S]`` model-space heatmaps of one image's embeddings (uncached; :meth:`localize` caches them): the
        one place that turns embeddings and prompts into maps, for :meth:`localize` and the evaluation.

        Args:
            localization: settings instead of :attr:`localization` (the evaluation's margin).
            gate: the image's ``[S, S]`` gate (:meth:`image_gates`); None = ungated.
        """
        config = localization or self.localization
        if config.similarity == "gloria":  # the word vectors and report vectors of one encoding
            out = self._encode_texts(prompts)
            reports, words = out.report_embedding.float().cpu(), self._query_words(out)
        else:
            reports, words = self.embed_prompts(prompts), None
        maps = heatmaps_from_embeddings(
            patch_embeddings, reports, self.preprocessing.input_size, config, shallow_patch_embeddings, words
        )
        return maps if gate is None else gate_heatmaps(maps, gate)

    def localize(
        self,
        prompts: str | Sequence[str],
        image: EncodedImage | None = None,
        space: str = "original",
    ) -> np.ndarray:
        """Heatmap(s) for one prompt ``[H, W]`` or a list ``[K, H, W]``.

        Args:
            prompts: free text ("left lower lobe pneumonia") or a list; one-word prompts are kept.
            image: an :class:`EncodedImage`; default the one from :meth:`set_image`.
            space: ``"original"`` (the image's pixels) or ``"model"`` (the ``S x S`` padded input).
        """
        if space not in ("original", "model"):
            raise ValueError(f"space must be 'original' or 'model', got {space!r}")
        single = isinstance(prompts, str)
        prompt_list = _as_prompt_list(prompts)
        encoded = self._image(image)
        keys = [normalize_prompt(p, self.localization.prompt_rule) for p in prompt_list]
        todo = [k for k in dict.fromkeys(keys) if k not in encoded._heatmaps]
        fresh: dict[str, np.ndarray] = {}
        if todo:
            # normalising is idempotent under both rules
            maps = self.model_space_heatmaps(
                encoded.patch_embeddings, encoded.shallow_patch_embeddings, todo, gate=encoded.gate
            )
            for key, heatmap in zip(todo, maps, strict=True):
                fresh[key] = np.array(heatmap, dtype=np.float32)
                fresh[key].setflags(write=False)
        for key in dict.fromkeys(keys):
            if key in encoded._heatmaps:
                encoded._heatmaps.move_to_end(key)
        result = np.stack([fresh[k] if k in fresh else encoded._heatmaps[k] for k in keys])
        encoded._remember(fresh)
        if space == "original":
            result = encoded.mapping.heatmap_to_original(result)
        return result[0] if single else result

    def zero_shot_logits(self, findings: str | Sequence[str], image: EncodedImage | None = None) -> dict[str, float]:
        """Per finding, the zero-shot logit ``z``: positive minus negative prompt-set score (``sigmoid(z)`` is the
        uncalibrated probability). Under ``ZeroShotConfig(similarity="gloria")`` a set's score is the maximum of
        :meth:`gloria_scores` over its prompts (GLoRIA's class score)."""
        encoded = self._image(image)
        if self.zero_shot.similarity == "gloria":
            result = {}
            for finding in _as_prompt_list(findings):
                positives, negatives = classification_prompts(finding.strip())
                pos, neg = (self.gloria_scores(prompts, encoded).max() for prompts in (positives, negatives))
                result[finding] = float(pos - neg)
            return result
        return {f: float(z[0]) for f, z in self.zero_shot_logits_batch(findings, encoded.image_embedding[None]).items()}

    def zero_shot_logits_batch(self, findings: str | Sequence[str], embeddings: torch.Tensor) -> dict[str, np.ndarray]:
        """:meth:`zero_shot_logits` of ``[N, D]`` global image embeddings at once (``encode_images``' output).

        Scores are ``logit_scale x cos`` (default) or raw dot products of each image embedding with the mean report
        vector of each prompt set (see :class:`ZeroShotConfig`).
        """
        if self.zero_shot.similarity == "gloria":
            raise ValueError(
                "zero-shot similarity 'gloria' needs each image's deep map: score images one at a time with "
                "zero_shot_logits / classify"
            )
        embeddings = embeddings.float().cpu()
        result = {}
        for finding in _as_prompt_list(findings):
            positives, negatives = classification_prompts(finding.strip())
            pos, neg = (self.embed_prompts(prompts).mean(dim=0) for prompts in (positives, negatives))
            if self.zero_shot.similarity == "cosine":
                scores = [
                    self.zero_shot.logit_scale * F.cosine_similarity(embeddings, v[None], dim=1) for v in (pos, neg)
                ]
            else:
                scores = [embeddings @ pos, embeddings @ neg]
            result[finding] = (scores[0] - scores[1]).numpy().astype(np.float64)
        return result

    def zero_shot_results(
        self, findings: str | Sequence[str], image: EncodedImage | None = None
    ) -> dict[str, ZeroShotResult]:
        """Per finding: the calibrated probability when the model has a calibration for it (else None), the
        uncalibrated score, and whether the model's training reports named it (None when not recorded)."""
        known = self.metadata.findings
        results = {}
        for finding, logit in self.zero_shot_logits(findings, image).items():
            item = self.calibration.get(finding) if self.calibration is not None else None
            seen = covers(known, finding) if known else None
            probability = float(item.probability(logit)) if item is not None else None
            results[finding] = ZeroShotResult(finding, probability, float(uncalibrated_probability(logit)), seen)
        return results

    def unseen_findings(self, prompt: str) -> list[str]:
        """The findings ``prompt`` names that this model's training reports never did ("pneumonia" for a model
        trained on consolidation, effusion, ...): its heatmap for them is not meaningful. ``[]`` when the model's
        findings are not recorded (:attr:`ModelMetadata.findings`)."""
        return unseen_findings(prompt, self.metadata.findings)

    def classify(self, findings: str | Sequence[str], image: EncodedImage | None = None) -> dict[str, float]:
        """Zero-shot probability per finding: calibrated (``calibration.json``) where the model has a calibration
        for the finding, else the uncalibrated softmax over (mean positive, mean negative) prompt scores.
        :meth:`zero_shot_results` says which is which."""
        return {
            finding: result.probability if result.probability is not None else result.uncalibrated
            for finding, result in self.zero_shot_results(findings, image).items()
        }


def _replaced(settings, changes: dict, what: str):
    """``settings`` (a frozen dataclass) with ``changes``; an unknown field is refused by name."""
    unknown = set(changes) - set(settings.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown {what} settings {sorted(unknown)}")
    return dataclasses.replace(settings, **changes)


def _as_float_image(image: np.ndarray) -> np.ndarray:
    """Validate an array image and return float32 in [0, 1] (uint8/uint16 scaled by their range)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"image must be [H, W] or [H, W, 3], got shape {image.shape}")
    if min(image.shape[:2]) < 2:
        raise ValueError(f"image of size {image.shape[0]}x{image.shape[1]} is too small")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    if image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"float image values must lie in [0, 1], got [{image.min():.3g}, {image.max():.3g}]; "
            "scale it first (uint8/uint16 arrays are scaled automatically)"
        )
    return image
