"""``python -m training fit|validate|test --config training/configs/X.yaml`` (LightningCLI)."""

from __future__ import annotations

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .data import ImageReportDataModule
from .system import AFLocPretraining


class AFLocCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # one source of truth: the data pipeline follows the model's text encoder and geometry
        parser.link_arguments("model.text_model", "data.text_model")
        parser.link_arguments("model.image_size", "data.image_size")
        parser.link_arguments("model.max_length", "data.max_length")


def cli_main(args: list[str] | None = None, run: bool = True) -> AFLocCLI:
    """Build (and by default run) the CLI; the resolved config is saved as ``config.yaml`` in the run folder."""
    return AFLocCLI(
        AFLocPretraining,
        ImageReportDataModule,
        args=args,
        run=run,
        seed_everything_default=1,
        save_config_kwargs={"overwrite": True},
        # the data module's EpochSampler shards by rank itself (and carries the epoch into caption sampling)
        trainer_defaults={"use_distributed_sampler": False},
    )
