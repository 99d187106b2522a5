"""Diagnostic: how well a checkpoint trained with the place loss fits its place targets.

For training photographs shown whole and unaugmented, the place targets its report gives
(:mod:`training.place_targets`, anchored on the disc found in the pixels) are scored with the checkpoint's own
place logits (the cosine of each finding's prompt with the deep map, times the run's learned scale, plus its bias):
per finding, the mean pooled probability of its bags (log-sum-exp at the run's ``place_pool_r``) and the mean
probability of its ruled-out cells, with the mean cosine of each. A term that is fitted has bags near 1 and
ruled-out cells near 0; compare with the heatmaps' pointing on the same split (``training evaluate --split train``)
to tell a fitted place term from maps that point at the lesions::

    python benchmarks/place_fit.py --model runs/rf/RUN/.../checkpoints/periodic-step=135.ckpt \\
        --manifest data/idrid_fine/manifest.csv --photographs 128

Reads Lightning checkpoints of runs with ``--model.place_weight`` > 0 only (the scale and bias are not exported).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import load_pretrained  # noqa: E402
from training.data import ImageReportDataModule  # noqa: E402
from training.place_targets import (  # noqa: E402
    PLACE_CATEGORIES,
    PLACE_CELLS,
    finding_prompts,
    place_masks,
    pooled_bags,
    prompt_cosine,
)


def place_fit(model, tokenizer, dataset, collate, scale: float, bias: float, r: float, photographs: int) -> dict:
    """Per finding: bags, mean pooled bag probability and cosine, mean ruled-out probability and cosine."""
    found = {name: {"bag_p": [], "bag_cos": [], "ruled_out_p": [], "ruled_out_cos": []} for name in PLACE_CATEGORIES}
    with torch.no_grad():
        prompts = model.encode_text(tokenizer(finding_prompts())).report_embedding
        for start in range(0, min(photographs, len(dataset)), 16):
            batch = collate([dataset[i] for i in range(start, min(start + 16, photographs, len(dataset)))])
            cosine = prompt_cosine(model.encode_image(batch["images"]).patch_embeddings, prompts)
            logits = scale * cosine + bias
            classes = batch["place_class"]
            bags, negative = place_masks(batch["place_boxes"], classes, batch["place_ruled_out"], *logits.shape[-2:],
                                         batch["place_names"], batch["place_anchor"])  # fmt: skip
            pooled, valid = pooled_bags(logits, bags, classes, r)
            for n, k in valid.nonzero().tolist():
                c = int(classes[n, k])
                found[PLACE_CATEGORIES[c]]["bag_p"].append(float(torch.sigmoid(pooled[n, k])))
                found[PLACE_CATEGORIES[c]]["bag_cos"].append(float(cosine[n, c][bags[n, k]].mean()))
            for n, c in negative.flatten(2).any(2).nonzero().tolist():
                ruled = negative[n, c]
                found[PLACE_CATEGORIES[c]]["ruled_out_p"].append(float(torch.sigmoid(logits[n, c][ruled]).mean()))
                found[PLACE_CATEGORIES[c]]["ruled_out_cos"].append(float(cosine[n, c][ruled].mean()))
    return {
        name: {"bags": len(v["bag_p"]), **{k: round(float(np.mean(x)), 3) if x else None for k, x in v.items()}}
        for name, v in found.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a Lightning checkpoint of a run with the place loss")
    parser.add_argument("--manifest", required=True, help="the run's manifest (training split)")
    parser.add_argument("--photographs", type=int, default=128, help="the first N training photographs")
    parser.add_argument("--place-cells", choices=PLACE_CELLS, help="the bags' cells (default: the run's own)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    checkpoint = torch.load(args.model, map_location="cpu", weights_only=True)
    state, hyper = checkpoint.get("state_dict", {}), checkpoint.get("hyper_parameters", {})
    if "place_bias" not in state:
        parser.error(f"{args.model} has no place loss head (trained without --model.place_weight)")
    cells = checkpoint.get("datamodule_hyper_parameters", {}).get("place_cells", "box")
    bundle = load_pretrained(args.model)
    pre = bundle.preprocessing
    data = ImageReportDataModule(args.manifest, text_model=bundle.model.config.text.name_or_path,
                                 image_size=pre.image_size, modality=pre.modality, mean=pre.mean, std=pre.std,
                                 batch_size=2, num_workers=0, place_targets=True,
                                 place_cells=args.place_cells or cells)  # fmt: skip
    data.setup("fit")
    result = place_fit(bundle.model.eval(), bundle.tokenizer, data.datasets["train"],
                       data.train_dataloader().collate_fn, float(state["place_log_scale"].exp()),
                       float(state["place_bias"]), float(hyper.get("place_pool_r", 1.0)), args.photographs)  # fmt: skip
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
