"""``training evaluate`` with heatmaps from each prompt's *sentence* vector instead of its report vector.

    python benchmarks/sentence_vector_heatmaps.py evaluate --model CKPT ... (the arguments of training evaluate)

The local losses pair deep-map regions with sentence vectors (the mean word vector of each sentence), while the
heatmap reads each region's dot product with the prompt's report vector (all word vectors, [CLS] and [SEP]
included, over ``max_length``). This runs the evaluation unchanged except for that vector: the prompt's sentence
vectors, [CLS] left out, averaged. A diagnostic for issue #32 (round 4 of ``docs/real_data_experiments.md``), not
a model setting.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from afloc import predictor as predictor_module  # noqa: E402
from afloc.text.tokenizer import normalize_prompt  # noqa: E402
from training.__main__ import main as training_main  # noqa: E402


def sentence_vectors(self, prompts) -> torch.Tensor:
    """``[K, D]``: each prompt's sentence vectors ([CLS] left out), averaged."""
    normalized = [normalize_prompt(p, self.localization.prompt_rule) for p in predictor_module._as_prompt_list(prompts)]
    tokens = self.tokenizer(normalized).to(self.device)
    with torch.inference_mode():
        out = self.model.encode_text(tokens)
    vectors, mask = out.sentence_embeddings.float(), out.sentence_mask.clone()
    mask[:, 0] = False
    return ((vectors * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)).cpu()


if __name__ == "__main__":
    predictor_module.AFLocPredictor.embed_prompts = sentence_vectors
    sys.exit(training_main(sys.argv[1:]))
