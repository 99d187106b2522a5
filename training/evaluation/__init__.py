"""Evaluation of localization against dataset ground truth: dataset readers, (later) metrics and CLIs."""
