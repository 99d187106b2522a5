"""The Lightning "system": the AFLoc model + its loss + the reference optimisation recipe."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer

from afloc import AFLocConfig, AFLocLoss, ImageEncoderConfig, LossConfig, TextEncoderConfig, build_model
from afloc.modeling.types import ImageEncoderOutput, TextEncoderOutput
from afloc.text.tokenizer import sample_caption

from .distributed import gather_boxes, gather_image_outputs, gather_text_outputs
from .place_targets import finding_prompts, place_loss, place_masks, prompt_cosine

logger = logging.getLogger(__name__)


# the network's defaults live in afloc's dataclasses; the flat arguments below take them from there
_IMAGE, _TEXT, _LOSS = ImageEncoderConfig(), TextEncoderConfig(), LossConfig()
# the ResNet backbone's stages from the input, for ``freeze_image_stages``
_BACKBONE_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


def _by_keyword(cls, values: dict):
    """``cls`` built from the entries of ``values`` that are its fields (the flat training arguments)."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


class AFLocPretraining(pl.LightningModule):
    """Multi-level contrastive pretraining (docs/method.md section 3).

    Args:
        backbone: ``resnet10`` / ``resnet18`` / ``resnet34`` / ``resnet50``.
        image_size: pad-resize side of the input (224).
        internal_size: the reference's internal resize (299) or None.
        image_weights: initial backbone weights: None (random), a state-dict file, or ``"torchvision"``.
        init_model: start from a whole trained model (a model directory or a training ``.ckpt``, e.g. the bundled
            PhantomFundus model): every tensor whose name and shape match is copied; the others keep their
            initial values and are named in the log (a different image size changes the position embeddings).
        text_model: BERT directory or hub id; None = the offline all-MiniLM-L6-v2.
        freeze_text: keep the text encoder at its pretrained weights (no gradients, dropout off). Faster on a
            CPU, and the exported model can leave the text weights out (``export --external-text``).
        freeze_image_stages: keep the first this many stages of the image backbone (1: the stem, 2: and layer1,
            3: and layer2, ... 5: every stage) at their initial weights (``init_model`` or ``image_weights``): no
            gradients, and their BatchNorm statistics fixed (also by ``recalibrate_bn_batches``). 0 = train
            everything (the reference). Less to fit on a small corpus: the early filters cannot learn the training
            images' own features. Not in the reference.
        center_words: subtract the mean word vector of ``center_captions`` training captions from every word
            vector (computed once when fitting starts, saved in the model). Needs ``freeze_text``. Not in the
            reference; see :attr:`afloc.modeling.config.TextEncoderConfig.center_words`.
        center_captions: how many training captions (the first ones of the manifest) the centre averages.
        recalibrate_bn_batches: before each validation while fitting, recompute the image encoder's BatchNorm
            running statistics as the plain average over this many training batches (0 = off, reference). With
            a from-scratch encoder the running averages lag the fast-moving weights and eval-mode outputs (what
            inference uses) drift from train-mode ones; recalibrated statistics remove that gap.
        text_context: ``caption`` (reference) or ``sentence``: each sentence encoded on its own by the BERT
            (:attr:`afloc.modeling.config.TextEncoderConfig.context`). Not in the reference.
        text_adapter: ``none`` (reference), ``linear`` or ``mlp``: a small trainable map on word vectors
            (:attr:`afloc.modeling.config.TextEncoderConfig.adapter`), trained even when the BERT is frozen and exported
            without it. Not in the reference.
        cache_text: with a frozen BERT and ``text_context: sentence``, cache every distinct sentence's token
            vectors in memory (the BERT then runs once per distinct sentence instead of once per step). The loss
            is the same as without the cache (tested).
        channels_last: image batches and the image encoder in channels-last memory layout (faster convolutions
            on CPUs with oneDNN). Numerically equivalent.
        position_embeddings: a learned vector per region added to the shallow and deep maps
            (:attr:`afloc.modeling.config.ImageEncoderConfig.position_embeddings`). Not in the reference.
        last_n_layers: hidden layers summed into token vectors (4).
        max_length: word pieces per caption (97).
        report_weight, sentence_weight, word_weight: loss weights; 0 skips a term (ablations).
        word_level: ``shallow`` (AFLoc) or ``deep`` (GLoRIA-like) map for the word loss.
        attention_temperature, aggregation_temperature, logit_scale: gamma1, gamma2, gamma3 (defaults: LossConfig).
        text_chunk_size, recompute: memory controls of the local losses.
        null_attention: a "no token" slot in the local losses' attention
            (:attr:`afloc.modeling.config.LossConfig.null_attention`). Not in the reference.
        learning_rate, betas, weight_decay: Adam (2e-5, (0.5, 0.999), 1e-6 in the reference).
        lr_gamma: StepLR factor per epoch (0.9).
        warmup_steps: linear learning-rate warm-up over this many optimizer steps, then the per-epoch factor
            (0 = none, the reference). Not in the reference: a from-scratch encoder at a high learning rate.
        anneal_fraction: over this last fraction of the training budget (``trainer.max_steps`` or
            ``trainer.max_time``, whichever runs out first), the learning rate falls linearly to zero, on top of
            warm-up and the per-epoch factor (0 = off, the reference). A budget-aware schedule for runs that stop
            on wall-clock time. Not in the reference.
        gather_across_ranks: under DDP, compute every loss over the global batch (embeddings gathered with
            gradients) instead of each rank's own batch.
        place_weight: weight of the place loss (:mod:`training.place_targets`; needs ``--data.place_targets
            true``): each finding's heatmap, the cosine of its prompt vector ("hard exudates") with the deep map, as
            cell logits (a learned scale and bias, kept out of the exported model), should be warm over the places
            the report names and cold where it rules the finding out. 0 (default) = off. Not in the reference.
        place_pool_r: the log-sum-exp sharpness that pools a named place's cells (1: near their mean, so the whole
            place should be warm; large: near their maximum).
    """

    def __init__(
        self,
        backbone: Literal["resnet10", "resnet18", "resnet34", "resnet50"] = _IMAGE.backbone,
        image_size: int = _IMAGE.image_size,
        internal_size: int | None = _IMAGE.internal_size,
        image_weights: str | None = None,
        text_model: str | None = None,
        freeze_text: bool = False,
        freeze_image_stages: int = 0,
        center_words: bool = False,
        center_captions: int = 1024,
        recalibrate_bn_batches: int = 0,
        text_context: Literal["caption", "sentence"] = _TEXT.context,
        text_adapter: Literal["none", "linear", "mlp"] = _TEXT.adapter,
        cache_text: bool = False,
        channels_last: bool = False,
        position_embeddings: bool = _IMAGE.position_embeddings,
        last_n_layers: int = _TEXT.last_n_layers,
        max_length: int = _TEXT.max_length,
        report_weight: float = _LOSS.report_weight,
        sentence_weight: float = _LOSS.sentence_weight,
        word_weight: float = _LOSS.word_weight,
        word_level: Literal["shallow", "deep"] = _LOSS.word_level,
        attention_temperature: float = _LOSS.attention_temperature,
        aggregation_temperature: float = _LOSS.aggregation_temperature,
        logit_scale: float = _LOSS.logit_scale,
        text_chunk_size: int | None = _LOSS.text_chunk_size,
        recompute: bool = _LOSS.recompute,
        null_attention: bool = _LOSS.null_attention,
        learning_rate: float = 2e-5,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 1e-6,
        lr_gamma: float = 0.9,
        warmup_steps: int = 0,
        anneal_fraction: float = 0.0,
        gather_across_ranks: bool = False,
        init_model: str | None = None,
        place_weight: float = 0.0,
        place_pool_r: float = 1.0,
    ) -> None:
        super().__init__()
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not 0 < lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {lr_gamma}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0 <= anneal_fraction <= 1:
            raise ValueError(f"anneal_fraction must be in [0, 1], got {anneal_fraction}")
        if center_words and not freeze_text:
            raise ValueError("center_words needs freeze_text: the centre is computed once from the frozen encoder")
        if center_captions < 1:
            raise ValueError(f"center_captions must be >= 1, got {center_captions}")
        if cache_text and not (freeze_text and text_context == "sentence"):
            raise ValueError("cache_text needs freeze_text: true and text_context: sentence")
        if not 0 <= freeze_image_stages <= len(_BACKBONE_STAGES):
            raise ValueError(f"freeze_image_stages must be in 0..{len(_BACKBONE_STAGES)}, got {freeze_image_stages}")
        if recalibrate_bn_batches < 0:
            raise ValueError(f"recalibrate_bn_batches must be >= 0, got {recalibrate_bn_batches}")
        if place_weight < 0:
            raise ValueError(f"place_weight must be >= 0, got {place_weight}")
        if place_pool_r <= 0:
            raise ValueError(f"place_pool_r must be > 0, got {place_pool_r}")
        self.save_hyperparameters()
        given = {**self.hparams, "name_or_path": text_model, "frozen": freeze_text, "context": text_context,
                 "adapter": text_adapter, "initial_weights": image_weights}  # fmt: skip
        loss = _by_keyword(LossConfig, given)
        config = AFLocConfig(
            image=_by_keyword(ImageEncoderConfig, given), text=_by_keyword(TextEncoderConfig, given), loss=loss
        )
        self.model = build_model(config, pretrained_text=True)
        if init_model:
            _copy_matching_weights(self.model, init_model)
        self.loss = AFLocLoss(loss)
        if freeze_text:
            self.model.text_encoder.requires_grad_(False)
            self.model.text_encoder.eval()
        for module in self._frozen_image_modules():
            module.requires_grad_(False)
            module.eval()
        if cache_text:
            self.model.text_encoder.enable_cache()
        if channels_last:
            self.model.image_encoder.to(memory_format=torch.channels_last)
        if place_weight > 0:  # cosine -> cell logit; training only (not under self.model, so never exported)
            self.place_log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
            self.place_bias = torch.nn.Parameter(torch.tensor(-2.0))
            self._place_text = None

    def _frozen_image_modules(self) -> list[torch.nn.Module]:
        backbone = self.model.image_encoder.backbone
        names = [n for stage in _BACKBONE_STAGES[: self.hparams.get("freeze_image_stages", 0)] for n in stage]
        return [getattr(backbone, name) for name in names]

    def _keep_frozen_in_eval(self) -> None:
        if self.hparams.freeze_text and self.model.text_encoder.training:
            self.model.text_encoder.eval()  # a frozen encoder keeps dropout off
        for module in self._frozen_image_modules():
            module.eval()  # frozen stages keep their BatchNorm statistics

    def train(self, mode: bool = True):
        super().train(mode)
        self._keep_frozen_in_eval()
        return self

    def on_train_batch_start(self, batch, batch_index: int) -> None:
        # Lightning restores the submodules' training flags as they were when fitting started; a frozen text
        # encoder must stay in eval mode (no dropout, and its sentence cache is only valid there), and frozen image
        # stages keep their BatchNorm statistics
        self._keep_frozen_in_eval()

    # ------------------------------------------------------------------ steps
    def _text_trainable(self) -> bool:
        """Whether any text weight trains (the BERT, or the adapter on a frozen BERT)."""
        return not self.hparams.freeze_text or self.model.text_adapter is not None

    def _step(self, batch: dict, stage: str) -> torch.Tensor | None:
        if "images" not in batch or batch["images"].shape[0] < 2:
            return None  # every sample of the batch was unreadable, or a last batch of one
        images = batch["images"]
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        image_out: ImageEncoderOutput = self.model.encode_image(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._text_trainable()):
            text_out: TextEncoderOutput = self.model.encode_text(batch["text"])
        view_boxes = batch.get("view_boxes")  # zone views (training.zone_views): the visible part of each image
        if self.hparams.gather_across_ranks and self.trainer.world_size > 1:
            image_out, text_out = gather_image_outputs(image_out), gather_text_outputs(text_out)
            view_boxes = None if view_boxes is None else gather_boxes(view_boxes)
        terms = self.loss(image_out, text_out, view_boxes)
        if self.hparams.get("place_weight", 0.0) > 0 and "place_class" in batch:
            terms["place"] = self._place_loss(image_out.patch_embeddings, batch)
            terms["total"] = terms["total"] + self.hparams.place_weight * terms["place"]
        batch_size = batch["images"].shape[0]
        for name, value in terms.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=stage == "train",
                on_epoch=True,
                prog_bar=name == "total",
                batch_size=batch_size,
                sync_dist=stage != "train",
            )
        self.log(
            f"{stage}/skipped",
            float(batch["skipped"]),
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            batch_size=batch_size,
            sync_dist=stage != "train",
        )
        return terms["total"]

    def _place_loss(self, patches: torch.Tensor, batch: dict) -> torch.Tensor:
        """The place loss (:func:`training.place_targets.place_loss`) of the batch's whole photographs on the cosine
        maps of each finding's prompt with the deep map."""
        if self._place_text is None:
            raise ValueError("place_weight > 0: the finding prompts were not tokenised (fitting sets them)")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._text_trainable()):
            prompts = self.model.encode_text(self._place_text.to(patches.device)).report_embedding
        logits = self.place_log_scale.exp() * prompt_cosine(patches, prompts) + self.place_bias
        bags, negative = place_masks(
            batch["place_boxes"],
            batch["place_class"],
            batch["place_ruled_out"],
            *logits.shape[-2:],
            batch.get("place_names"),
            batch.get("place_anchor"),
        )
        return place_loss(logits, bags, batch["place_class"], negative, self.hparams.place_pool_r)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor | None:
        self.log("elapsed_s", self.elapsed_seconds(), on_step=True, on_epoch=False)
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_index: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_index: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=self.hparams.learning_rate,
            betas=tuple(self.hparams.betas),
            weight_decay=self.hparams.weight_decay,
        )
        warmup, gamma = self.hparams.warmup_steps, self.hparams.lr_gamma
        anneal = self.hparams.get("anneal_fraction", 0.0)
        if not warmup and not anneal:
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=gamma)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        if anneal and self._budget_progress() is None:
            raise ValueError("anneal_fraction needs a training budget: set trainer.max_steps or trainer.max_time")
        # per step: linear warm-up, the same per-epoch decay as StepLR, then the linear fall to zero
        data = self.trainer.datamodule
        per_epoch = max(1, len(data.datasets["train"]) // (data.hparams.batch_size * max(1, self.trainer.world_size)))

        def factor(step: int) -> float:
            value = min(1.0, (step + 1) / warmup) if warmup else 1.0
            value *= gamma ** (step // per_epoch)
            if anneal:
                value *= min(1.0, max(0.0, (1.0 - self._budget_progress()) / anneal))
            return value

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _budget_progress(self) -> float | None:
        """The share of the training budget used so far (steps or wall-clock, whichever is further), or None
        when the trainer has neither ``max_steps`` nor ``max_time``."""
        trainer = self.trainer
        shares = []
        if trainer.max_steps is not None and trainer.max_steps > 0:
            shares.append(trainer.global_step / trainer.max_steps)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer.time_remaining() is not None:
            elapsed = timer.time_elapsed()
            total = elapsed + timer.time_remaining()
            shares.append(elapsed / total if total > 0 else 1.0)
        return min(1.0, max(shares)) if shares else None

    @torch.no_grad()
    def warm_text_cache(self, sentences: list[str], tokenizer, batch_size: int = 256) -> int:
        """Encode every distinct sentence once into the text cache (``cache_text``); returns the cache size."""
        encoder = self.model.text_encoder
        encoder.eval()
        unique = sorted(set(sentences))
        for start in range(0, len(unique), batch_size):
            encoder(tokenizer(unique[start : start + batch_size]).to(self.device))
        return len(encoder._sentence_cache or {})

    def on_fit_start(self) -> None:
        if self.hparams.cache_text:
            dataset = self.trainer.datamodule.datasets["train"]
            start = time.perf_counter()
            sentences = [s for report in dataset.sentences for s in report]
            size = self.warm_text_cache(sentences, self.trainer.datamodule.tokenizer)
            logger.info("text cache: %d distinct sentences encoded in %.1f s", size, time.perf_counter() - start)
        self._fit_start_time = time.perf_counter() - getattr(self, "_elapsed_before", 0.0)
        self._set_word_center()
        if self.hparams.get("place_weight", 0.0) > 0:
            datamodule = self.trainer.datamodule
            if not getattr(datamodule, "hparams", {}).get("place_targets", False):
                raise ValueError("place_weight > 0 needs place targets in the batches: set --data.place_targets true")
            self._place_text = datamodule.tokenizer(finding_prompts())

    def elapsed_seconds(self) -> float:
        """Wall-clock seconds of fitting so far (across resumes; logged as ``elapsed_s``)."""
        start = getattr(self, "_fit_start_time", None)
        return 0.0 if start is None else time.perf_counter() - start

    def _set_word_center(self) -> None:
        model = self.model
        if model.word_center is None or bool(model.word_center.any()):
            return  # no centring, or already set (resumed run)
        datamodule = self.trainer.datamodule
        dataset = datamodule.datasets["train"]
        count = min(self.hparams.center_captions, len(dataset.sentences))
        captions = [sample_caption(dataset.sentences[i], random.Random(f"center:{i}")) for i in range(count)]
        batches = [datamodule.tokenizer(captions[i : i + 64]).to(self.device) for i in range(0, count, 64)]
        center = model.set_word_center(batches)
        logger.info("word centre from %d training captions (norm %.2f)", count, float(center.norm()))

    def on_validation_epoch_start(self) -> None:
        batches = self.hparams.recalibrate_bn_batches
        if batches and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            recalibrate_batchnorm(self.model.image_encoder, self.trainer.datamodule.train_dataloader(), batches)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What afloc.load_pretrained needs to rebuild the network offline (plain types only: the checkpoint stays
        # loadable with torch.load(weights_only=True)), plus RNG states for an exact resume.
        # (kept out of hyper_parameters, which LightningCLI replays as arguments when resuming)
        data = self.trainer.datamodule if self._trainer is not None else None
        preprocessing = getattr(data, "preprocessing", None)  # modality, mean and std of the training images
        checkpoint["afloc"] = {
            "model_config": self.model.config.to_dict(),
            "preprocessing": preprocessing.to_dict() if preprocessing else {"image_size": self.hparams.image_size},
        }
        # the heatmap settings the localization monitor scored with (and the checkpoint was selected by) travel
        # with the weights: export, evaluate and localize on this checkpoint use them
        monitor = self._localization_monitor()
        if monitor is not None:
            checkpoint["afloc"]["localization"] = monitor.localization.to_dict()
        checkpoint["afloc_elapsed_s"] = self.elapsed_seconds()
        checkpoint["afloc_rng"] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
        if torch.cuda.is_available():
            checkpoint["afloc_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def _localization_monitor(self):
        from .callbacks import LocalizationMonitor

        if self._trainer is None:
            return None
        monitors = [c for c in self.trainer.callbacks if isinstance(c, LocalizationMonitor)]
        return monitors[0] if monitors else None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._elapsed_before = float(checkpoint.get("afloc_elapsed_s", 0.0))
        states = checkpoint.get("afloc_rng")
        if states:
            torch.set_rng_state(states["torch"])
            version, _, gauss = random.getstate()
            random.setstate((version, tuple(states["python"]), gauss))
            if "cuda" in states and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])


@torch.no_grad()
def recalibrate_batchnorm(encoder: torch.nn.Module, loader, batches: int) -> int:
    """Reset ``encoder``'s BatchNorm running statistics to their plain average over ``batches`` batches.

    Forward passes in train mode without gradients; the global RNG state is left untouched (a run resumed from a
    checkpoint stays identical). Returns the number of batches used.
    """
    every_norm = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    # a frozen norm (no trainable affine weight: ``freeze_image_stages``) keeps its statistics
    norms = [m for m in every_norm if m.weight is None or m.weight.requires_grad]
    if not norms:
        return 0
    device = next(encoder.parameters()).device
    flags, momenta = {m: m.training for m in encoder.modules()}, [m.momentum for m in norms]
    used = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average = plain mean over the batches
        encoder.train()
        for m in every_norm:
            if m not in norms:
                m.eval()
        try:
            for batch in loader:
                if "images" not in batch:
                    continue
                encoder(batch["images"].to(device))
                used += 1
                if used >= batches:
                    break
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            for m, training in flags.items():
                m.training = training
    return used


def _copy_matching_weights(model: torch.nn.Module, source: str) -> None:
    """Copy every tensor of the model at ``source`` whose name and shape match ``model``'s (see ``init_model``)."""
    from afloc.hub.format import load_pretrained

    theirs = load_pretrained(source).model.state_dict()
    ours = model.state_dict()
    copied = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    if not copied:
        raise ValueError(f"init_model {source!r}: no weight matches this model's names and shapes")
    model.load_state_dict(copied, strict=False)
    skipped = sorted(set(ours) - set(copied))
    logger.info("init_model %s: copied %d tensors, kept %d at their initial values: %s",
                source, len(copied), len(skipped), skipped[:20])  # fmt: skip
