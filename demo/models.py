"""Model discovery and loading for the demo: model directories on disk -> cached, immutable predictors.

A *model directory* is a folder holding ``config.json`` (written by :func:`afloc.save_pretrained`). The demo
lists the ones directly under the bundled ``assets/models/`` and under a user folder (``--models-dir``,
``$AFLOC_MODELS_DIR`` or ``~/.afloc/models``), so a model exported there appears after "refresh". When no
bundled model exists, the default is a tiny randomly initialised network built in code, clearly flagged as
untrained. Nothing here imports gradio, and nothing is loaded at import time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from afloc.hub.format import is_model_dir, read_card, read_model_info
from afloc.predictor import AFLocPredictor

logger = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_MODELS_DIR = ASSETS_DIR / "models"
EXAMPLES_DIR = ASSETS_DIR / "examples"
UNTRAINED_KEY = "untrained"
UNTRAINED_CARD = (
    "# Untrained model\n\n"
    "A ResNet-18 with random weights and the offline all-MiniLM-L6-v2 text encoder, built because no trained "
    "model was found in `assets/models/` or the user models folder. **Its heatmaps are meaningless**; it only "
    "shows how the demo works. Export a trained model with `afloc.save_pretrained` into the models folder and "
    "press refresh."
)


def default_user_models_dir() -> Path:
    """``$AFLOC_MODELS_DIR`` if set, else ``~/.afloc/models`` (it may not exist)."""
    return Path(os.environ.get("AFLOC_MODELS_DIR") or "~/.afloc/models").expanduser()


def find_model_dirs(folder: Path) -> list[Path]:
    """Model directories in ``folder``: the folder itself if it holds ``config.json``, else its subfolders that
    do (sorted by name); ``[]`` for a missing or unreadable folder."""
    try:
        if is_model_dir(folder):
            return [folder.resolve()]
        return sorted(p.resolve() for p in folder.iterdir() if p.is_dir() and is_model_dir(p))
    except OSError:
        return []


@dataclass(frozen=True)
class LoadedModel:
    """A ready predictor and what the UI shows about it. Shared between sessions: never mutated.

    Attributes:
        key: the dropdown value (the resolved directory path, or :data:`UNTRAINED_KEY`).
        name: short display name.
        predictor: a shared :class:`afloc.AFLocPredictor` (keep per-user data in an ``EncodedImage``).
        card: model card Markdown.
        untrained: random weights: heatmaps are meaningless.
        synthetic: trained on synthetic images only (the directory's metadata says so).
    """

    key: str
    name: str
    predictor: object
    card: str
    untrained: bool = False
    synthetic: bool = False
    digest: str = ""  # sha256 of the weight files (first 16 hex digits); "" when not from a directory


def weights_digest(directory: Path) -> str:
    """The first 16 hex digits of the sha256 over a model directory's weight files (in name order)."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(directory.glob("model*.safetensors")):
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def model_banner(synthetic: bool, untrained: bool) -> str:
    """Markdown warnings for a model: untrained and/or trained on synthetic data; ``""`` for neither."""
    lines = []
    if untrained:
        lines.append("### ⚠️ UNTRAINED MODEL: heatmaps are meaningless (random weights; for trying the demo only)")
    if synthetic:
        lines.append(
            "### ⚠️ Synthetic-data model: trained on synthetic images only; heatmaps on real films are not meaningful"
        )
    return "\n\n".join(lines)


def build_untrained_model(image_size: int = 224) -> LoadedModel:
    """A ResNet-18 (random, seed 0) + the offline MiniLM BERT; the global RNG state is left untouched."""
    import torch

    from afloc import AFLocConfig, ImageEncoderConfig, Preprocessing, build_model, load_tokenizer

    config = AFLocConfig(image=ImageEncoderConfig(backbone="resnet18", image_size=image_size))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(config).eval()
    tokenizer = load_tokenizer(config.text.name_or_path, max_length=config.text.max_length)
    predictor = AFLocPredictor(model, tokenizer, Preprocessing(image_size=image_size), device="cpu")
    return LoadedModel(UNTRAINED_KEY, "untrained ResNet-18 (random weights)", predictor, UNTRAINED_CARD, True)


class ModelStore:
    """The models a demo offers, and an LRU cache of loaded predictors keyed by model path.

    Args:
        folders: where to look for model directories: the bundled folder first, then the user's; missing
            folders are fine.
        preloaded: ready models offered as well (tests, ``build_demo(predictor)``), listed first.
        cache_size: loaded models kept in memory.
        device: where predictors run (default: CUDA when available).
    """

    def __init__(
        self,
        folders: Sequence[str | Path] = (),
        preloaded: Iterable[LoadedModel] = (),
        cache_size: int = 3,
        device: str | None = None,
    ) -> None:
        self.folders = [Path(f).expanduser() for f in folders]
        self.preloaded = {m.key: m for m in preloaded}
        self.cache_size = max(1, cache_size)
        self.device = device
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # guards the cache dict
        self._load_lock = threading.Lock()  # one load at a time (loads are rare; avoids loading twice)

    def _found(self) -> list[tuple[Path, Path, str]]:
        """``(model directory, folder it was found in, key)`` for every model directory on disk now, first folder
        first. Keys are opaque, ``<where>/<folder name>`` (``bundled/afloc_phantomcxr_r10``, ``user/my_model``,
        ``start-up/...``): the page and its API never see a server path."""
        found, seen, keys = [], set(), set(self.preloaded)
        for index, folder in enumerate(self.folders):
            tag = self._tag(index, folder)
            for path in find_model_dirs(folder):
                if path in seen:
                    continue
                seen.add(path)
                key, number = f"{tag}/{path.name}", 2
                while key in keys:  # two folders of one tag holding the same name
                    key, number = f"{tag}/{path.name}~{number}", number + 1
                keys.add(key)
                found.append((path, folder, key))
        return found

    def _tag(self, index: int, folder: Path) -> str:
        """The first folder is the bundled one (by this store's contract), the second the user's."""
        try:
            if index > 0 and is_model_dir(folder):
                return "start-up"
        except OSError:
            pass
        return ("bundled", "user")[index] if index < 2 else f"folder{index}"

    def key_for(self, path: str | Path) -> str | None:
        """The key of a model directory on disk (None when no folder of the store holds it)."""
        try:
            wanted = Path(path).expanduser().resolve()
        except OSError:
            return None
        return next((key for found, _, key in self._found() if found == wanted), None)

    def path_of(self, key: str) -> Path:
        """The model directory behind a key; ValueError for a key no folder offers now."""
        path = next((found for found, _, k in self._found() if k == key), None)
        if path is None:
            raise ValueError(f"unknown model {key!r}: press refresh and choose one from the list")
        return path

    def model_info(self, key: str):
        """``(Preprocessing, ModelMetadata)`` of a discovered model directory, read without the weights."""
        return read_model_info(self.path_of(key))

    def source(self, key: str) -> str:
        """Where a model comes from, in words and without server paths (shown in its model card)."""
        if key in self.preloaded:
            return "loaded by the program that started this demo"
        if key == UNTRAINED_KEY:
            return "built in code (random weights)"
        path, folder = next(((p, f) for p, f, k in self._found() if k == key), (None, None))
        name = path.name if path is not None else key
        if folder is not None and folder.expanduser().resolve() == BUNDLED_MODELS_DIR.resolve():
            return f"bundled with the demo (`assets/models/{name}`)"
        if folder is not None and folder.expanduser().resolve() == path:
            return f"the model directory given at start-up (`{name}`)"
        return f"the user models folder (`{folder.name if folder else '?'}/{name}`)"

    def discover(self) -> list[tuple[str, str]]:
        """``[(label, key)]`` for the dropdown: preloaded models, then the model directories found now in each
        folder; the untrained fallback is listed last when the first (bundled) folder holds no model.

        Labels are model names only (no server paths); a name found in two folders gets its folder's name too.
        The source of each model is given in its card (:meth:`card`).
        """
        choices = [(m.name, m.key) for m in self.preloaded.values()]
        found = self._found()
        names = [path.name for path, _, _ in found]
        for path, folder, key in found:
            label = path.name if names.count(path.name) == 1 else f"{path.name} ({folder.name})"
            choices.append((label, key))
        if not (self.folders and find_model_dirs(self.folders[0])):
            choices.append(("untrained model (random weights)", UNTRAINED_KEY))
        return choices

    def default_key(self) -> str:
        """A preloaded model, else the first bundled chest X-ray model (sorted; the demo opens on that modality),
        else the first bundled model, else the untrained fallback."""
        if self.preloaded:
            return next(iter(self.preloaded))
        bundled = find_model_dirs(self.folders[0]) if self.folders else []
        keys = [key for key in (self.key_for(path) for path in bundled) if key]
        for key in keys:
            try:
                if self.model_info(key)[0].modality == "cxr":
                    return key
            except ValueError:  # unreadable: not a start-up model
                continue
        return keys[0] if keys else UNTRAINED_KEY

    def card(self, key: str) -> str:
        """The model card without loading the weights, followed by the model's source (``""`` when unreadable)."""
        if key in self.preloaded:
            return self.preloaded[key].card
        if key == UNTRAINED_KEY:
            return UNTRAINED_CARD
        try:
            text = read_card(self.path_of(key))
        except ValueError:
            return ""
        return self._with_source(text, key) if text else ""

    def card_summary(self, key: str | None) -> str:
        """The card's five lines for clinicians (its "For clinicians" section, else lines made from the model's
        recorded training data), shown above the card, which sits behind "details"."""
        from afloc.hub.cards import CLINICIAN_SECTION, card_section, clinician_summary

        if key is None:
            return ""
        if key == UNTRAINED_KEY:
            return "- **Untrained model: its heatmaps are meaningless.** It only shows how the demo works."
        written = card_section(self.card(key), CLINICIAN_SECTION)
        if written:
            return written
        synthetic = None
        if key not in self.preloaded and key != UNTRAINED_KEY:
            try:
                synthetic = self.model_info(key)[1].synthetic_data
            except ValueError:
                return ""
        return clinician_summary(synthetic)

    def synthetic(self, key: str) -> bool:
        """Whether a model was trained on synthetic images only, from its metadata (without loading weights)."""
        if key in self.preloaded:
            return self.preloaded[key].synthetic
        if key == UNTRAINED_KEY:
            return False
        try:
            return self.model_info(key)[1].synthetic_data
        except ValueError:
            return False  # unreadable: loading it reports the problem

    def _with_source(self, card: str, key: str) -> str:
        return f"{card.rstrip()}\n\n---\n**Source**: {self.source(key)}\n"

    def get(self, key: str | None) -> LoadedModel:
        """The loaded model for a dropdown value; ValueError with a readable reason when it cannot load.

        Only keys that :meth:`discover` offers are accepted, so a client cannot make the server read an
        arbitrary path.
        """
        key = key or self.default_key()
        if key in self.preloaded:
            return self.preloaded[key]
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if key != UNTRAINED_KEY and key not in {k for _, k in self.discover()}:  # untrained: any modality lacking one
            raise ValueError(f"unknown model {key!r}: press refresh and choose one from the list")
        with self._load_lock:
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            model = self._load(key)
            with self._lock:
                self._cache[key] = model
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return model

    def _load(self, key: str) -> LoadedModel:
        if key == UNTRAINED_KEY:
            logger.info("no trained model found: building an untrained one")
            return build_untrained_model()
        from afloc import load_pretrained

        path = self.path_of(key)
        try:
            bundle = load_pretrained(path)
        except Exception as error:  # a broken folder must not take the server down: report any failure
            logger.warning("could not load model %s: %s", path, error)
            raise ValueError(f"could not load the model in {path.name}: {error}") from error
        predictor = AFLocPredictor.from_bundle(bundle, device=self.device)
        logger.info("loaded model %s", key)  # its key, not its path on this machine
        card = self._with_source(bundle.card, key)
        digest = weights_digest(path)
        return LoadedModel(key, path.name, predictor, card, synthetic=bundle.metadata.synthetic_data, digest=digest)
