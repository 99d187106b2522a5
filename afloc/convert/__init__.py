"""Converting the authors' released checkpoints (and GLoRIA's) into this library's model directories, with a
restricted unpickler that never runs code from the file. ``python -m afloc.convert --help``."""

from .converter import ConversionError, convert_checkpoint, main

__all__ = ["ConversionError", "convert_checkpoint", "main"]
