"""Diagnostic: how well can this image encoder localize at all, at this size and budget, WITH box supervision?

Trains the same image encoder as the recipe (ResNet @ image size, the deep map that feeds AFLoc's heatmaps) on
the PhantomCXR train split with the ground-truth boxes: a 1x1 head on the deep map predicts, per grid cell, the
covered fraction of each (finding kind, side) class (8 kinds x {patient's right, left, both/central}; the side
is read off the boxes). The heatmap of a test phrase is its class's map, turned into a heatmap by the same
smoothing / upsampling / scaling and scored by the same protocol as ``training evaluate`` (the prompt's meaning
is given: this measures the image side only). A diagnostic, never shipped and never called AFLoc::

    python benchmarks/supervised_upper_bound.py --corpus data/phantom20k --image-size 128 --minutes 12 \\
        --threads 1 --out runs/upper_bound

On a real-data corpus (``training prepare-fundus`` / ``prepare-cxr``), ``--classes category`` makes one class per
finding category (the prompt-level classes those corpora are scored on); ``--modality fundus --mean ... --std ...``
preprocess colour photographs as the recipe does, and ``--split`` picks the scored splits (``test`` by default: a
diagnostic, never a choice)::

    python benchmarks/supervised_upper_bound.py --corpus data/realcxr --classes category --backbone resnet10 \\
        --image-size 224 --minutes 12 --threads 1 --out runs/upper_bound_cxr

``--supervision presence`` is the weakly supervised bound: the same network learns only WHICH findings an image
has (what a report says, with no place), by binary cross-entropy on each class map pooled to one logit per image
(log-sum-exp pooling, ``--pool-r``, between the mean (r -> 0) and the maximum (r -> inf) of the cells), and its
class maps are scored as above. It says how much of a finding's place an encoder of this size can find from
image-level presence alone. Every image of the training split with at least one finding sample takes part, and
is a negative for each class it lacks; so do the training images of the corpus's manifest that have none (the
normal films of a chest corpus: up to as many as there are images with findings), negatives for every class.

``--supervision zones`` (fundus corpora) is the bound of what the generated reports say: which findings, and the
places their sentences name. Each located sentence of a training photograph's report ("hard exudates temporal to
the macula") is a positive bag: its finding's class map, pooled by log-sum-exp over the cells of the region the
sentence names (:func:`training.zone_views.sentence_regions`, the regions zone views use), should be high. Cells the
report rules out are negatives, each cell on its own: every cell for a finding the report denies or leaves out, and
the cells outside every named region of a finding whose every sentence names a place. No box is read for
training: only the report text, as the annotation-free recipe sees it.

``--supervision anchored`` (fundus corpora) asks what reports could teach if their places were finer and every
place sat where it truly is on each photograph: each lesion box is given the place a grader's report would name
for it (``--places coarse``: the generated reports' regions, :func:`training.realdata.fundus.region_of`;
``--places fine``: the ETDRS grid's subfields around the fovea, :func:`training.realdata.fundus.fine_region`, which
``prepare-fundus --places fine`` writes), and the bag is every map cell whose centre lies in that place **on this
photograph**, anchored on its annotated disc. The losses are those of ``zones``. The boxes choose the places and
the disc anchors them, so this is a bound on text of that granularity with perfectly placed views, not an
annotation-free result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from text_probe import attributes  # noqa: E402

from afloc.imaging.boxes import Box  # noqa: E402
from afloc.imaging.io import load_image  # noqa: E402
from afloc.imaging.transforms import Preprocessing  # noqa: E402
from afloc.localization.heatmaps import LocalizationConfig, heatmaps_from_embeddings  # noqa: E402
from afloc.modeling.config import ImageEncoderConfig  # noqa: E402
from afloc.modeling.image_encoder import ImageEncoder  # noqa: E402
from afloc.text.tokenizer import report_sentences  # noqa: E402
from training.callbacks import summarize_scores  # noqa: E402
from training.evaluation.datasets import read_phantom  # noqa: E402
from training.evaluation.protocol import HeatmapSource, ProtocolConfig, evaluate_localization  # noqa: E402
from training.evaluation.report import summarize_localization, to_json_safe  # noqa: E402
from training.place_targets import place_loss, place_masks, place_tensors, report_places  # noqa: E402
from training.zone_views import report_eye  # noqa: E402

KINDS = ("consolidation", "atelectasis", "pleural_effusion", "pneumothorax", "cardiomegaly", "nodule", "mass", "edema")
SIDES = ("right", "left", "both")


def class_of(sample) -> int:
    """(kind, side) class index; the side is read off the boxes as in the text probe (:func:`text_probe.attributes`)."""
    return KINDS.index(sample.category) * len(SIDES) + SIDES.index(attributes(sample)["side"])


class SupervisedSource(HeatmapSource):
    """Heatmaps from the supervised head: the map of the sample's class, through the model's heatmap pipeline."""

    def __init__(self, encoder, head, preprocessing, classes: dict[str, int], sigma: float) -> None:
        self.predictor, self.baseline, self.name = None, None, "supervised"
        self.encoder, self.head, self.preprocessing, self.classes = encoder, head, preprocessing, classes
        self.localization = LocalizationConfig(smoothing_sigma=sigma)

    def encode(self, tensors):
        with torch.inference_mode():
            return list(self.head(self.encoder(tensors).patch_embeddings).float())

    def heatmaps(self, encoded, prompts, sample_id, margin):
        one_hot = torch.zeros(1, encoded.shape[0])
        one_hot[0, self.classes[sample_id]] = 1.0
        config = LocalizationConfig(smoothing_sigma=self.localization.smoothing_sigma, margin=margin or 0)
        return heatmaps_from_embeddings(encoded, one_hot, self.preprocessing.image_size, config)


def targets(samples, preprocessing, grid: int, class_of=class_of, n_classes: int = len(KINDS) * len(SIDES)):
    """Images ``[N, 3, S, S]`` and per-cell covered fractions ``[N, C, grid, grid]`` of the training studies."""
    by_image: dict[str, list] = {}
    for sample in samples:
        by_image.setdefault(str(sample.image_path), []).append(sample)
    images, maps = [], []
    for path, group in by_image.items():
        tensor, mapping = preprocessing(load_image(path))
        target = np.zeros((n_classes, preprocessing.image_size, preprocessing.image_size), np.float32)
        for sample in group:
            truth = sample.gt_mask(mapping.original_height, mapping.original_width)
            target[class_of(sample)] += mapping.mask_to_model(truth).astype(np.float32)
        images.append(tensor)
        maps.append(F.adaptive_avg_pool2d(torch.from_numpy(np.clip(target, 0, 1)), grid))
    return torch.stack(images), torch.stack(maps)


def normal_images(corpus: Path, taken: set[str], limit: int, preprocessing) -> torch.Tensor:
    """Up to ``limit`` training images of ``corpus``'s manifest (``training prepare-*`` layout: ``labels`` column)
    with no finding label and not in ``taken``, preprocessed ``[N, 3, S, S]`` (empty without a manifest or without
    a ``labels`` column: an image of unknown findings is no negative)."""
    from training.manifest import read_manifest

    path = corpus / "manifest.csv"
    if not path.is_file():
        return torch.empty(0, 3, preprocessing.input_size, preprocessing.input_size)
    taken = {str(Path(image).resolve()) for image in taken}
    chosen = []
    for record in read_manifest(path, split="train"):
        if record.extra.get("labels") == "" and str(Path(record.image).resolve()) not in taken:  # a labels column
            chosen.append(record.image)
    chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, min(limit, len(chosen))).round().astype(int)]
    tensors = [preprocessing(load_image(path))[0] for path in dict.fromkeys(chosen)]
    return torch.stack(tensors) if tensors else torch.empty(0, 3, preprocessing.input_size, preprocessing.input_size)


def zone_targets(reports: list[str], categories: list[str], grid: int, max_bags: int = 12):
    """What each report says, on the ``grid x grid`` deep map (:func:`training.place_targets.report_places`, fixed
    frame): positive bags (``[N, max_bags, grid, grid]`` cell masks with their class ``[N, max_bags]``, -1 = none)
    and ruled-out cells ``[N, C, grid, grid]``."""
    bags = torch.zeros(len(reports), max_bags, grid, grid, dtype=torch.bool)
    bag_class = torch.full((len(reports), max_bags), -1, dtype=torch.long)
    negative = torch.ones(len(reports), len(categories), grid, grid, dtype=torch.bool)
    for n, report in enumerate(reports):
        sentences, eye = report_sentences(report), report_eye(report)
        # every unplaced mention counts (summaries=False): the reading of the recorded zones results (round 17)
        places, ruled_out = report_places(sentences, categories, eye, None, max_bags, summaries=False)
        one = place_tensors(places, ruled_out, max_bags)
        cells, ruled = place_masks(
            *(one[k][None] for k in ("place_boxes", "place_class", "place_ruled_out")), grid, grid
        )
        bags[n], bag_class[n], negative[n] = cells[0], one["place_class"], ruled[0]
    return bags, bag_class, negative


def anchored_targets(photos, categories: list[str], grid: int, places: str = "fine", max_bags: int = 24):
    """As :func:`zone_targets`, from each photograph's boxes (``photos``: ``(width, height, boxes)`` with each box's
    label its category): one bag per (finding, place) that the boxes occupy, its cells those of the place on this
    photograph (anchored on its disc; the disc's own bag is the cells within one disc diameter of it)."""
    from training.realdata.fundus import describe_photo, fine_region, region_of

    place_of = fine_region if places == "fine" else region_of
    bags = torch.zeros(len(photos), max_bags, grid, grid, dtype=torch.bool)
    bag_class = torch.full((len(photos), max_bags), -1, dtype=torch.long)
    negative = torch.ones(len(photos), len(categories), grid, grid, dtype=torch.bool)
    for n, (width, height, boxes) in enumerate(photos):
        photo = describe_photo(boxes, width, height)
        if photo.disc is None:  # no disc, no eye and no fovea: nothing can be placed, nothing is ruled out
            negative[n] = False
            continue
        side = max(width, height)  # cell centres in the photograph's pixels (centred padding to the square)
        centres = (np.arange(grid) + 0.5) / grid * side
        xs, ys = centres - (side - width) // 2, centres - (side - height) // 2
        labels = np.array([[place_of((x, y), photo) for x in xs] for y in ys])
        near_disc = np.hypot(xs[None, :] - photo.disc[0], ys[:, None] - photo.disc[1]) <= photo.disc_diameter
        k = 0
        for c, name in enumerate(categories):
            mine = [b for b in boxes if b.label == name]
            if name == "optic_disc":
                regions = [near_disc] if mine else []
            else:
                regions = [labels == place for place in sorted({place_of(b.centre, photo) for b in mine})]
            placed = torch.zeros(grid, grid, dtype=torch.bool)
            for region in regions:
                cells = torch.from_numpy(region)
                placed |= cells
                if k < max_bags and cells.any():
                    bags[n, k], bag_class[n, k] = cells, c
                    k += 1
            negative[n, c] = ~placed
    return bags, bag_class, negative


def pooled_logits(maps: torch.Tensor, r: float) -> torch.Tensor:
    """``[B, C, h, w]`` cell logits -> ``[B, C]`` image logits: ``log(mean(exp(r * x))) / r`` (log-sum-exp pooling)."""
    cells = maps.flatten(2)
    return (torch.logsumexp(r * cells, dim=2) - np.log(cells.shape[2])) / r


def training_reports(corpus: Path, images: list[str]) -> list[str]:
    """The manifest report of each training image (resolved paths), in order; a named error for one it lacks."""
    from training.manifest import read_manifest

    path = corpus / "manifest.csv"
    if not path.is_file():
        raise SystemExit(f"--supervision zones needs the corpus's manifest with its reports: {path} not found")
    by_image = {str(Path(r.image).resolve()): r.report for r in read_manifest(path, split="train")}
    missing = [image for image in images if image not in by_image]
    if missing:
        raise SystemExit(f"{len(missing)} training images have no report in {path}, e.g. {missing[0]}")
    return [by_image[image] for image in images]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--minutes", type=float, default=12.0, help="training wall-clock budget")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--train-images", type=int, default=6000, help="training studies with findings loaded")
    parser.add_argument("--test", type=int, default=1000, help="samples scored per split at most (evenly spaced)")
    parser.add_argument("--sigma", type=float, default=0.6)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write summary.json here")
    parser.add_argument(
        "--classes",
        choices=("kind-side", "category"),
        default="kind-side",
        help="kind-side: PhantomCXR's (kind, side) classes; category: one class per category",
    )
    parser.add_argument(
        "--split",
        nargs="+",
        default=["test"],
        help="the splits scored, each with bootstrap CIs per category (train: the fit on training films)",
    )
    parser.add_argument(
        "--categories",
        nargs="+",
        default=None,
        help="with --classes category: train and score only these findings (default: all)",
    )
    parser.add_argument(
        "--supervision",
        choices=("boxes", "presence", "zones", "anchored"),
        default="boxes",
        help="boxes: per-cell covered fraction (the upper bound); presence: image-level labels only; zones (fundus): "
        "the findings and places the reports name; anchored (fundus): places a grader would name for each box, "
        "at --places granularity, anchored on each photograph's annotated disc (a bound, not annotation-free)",
    )
    parser.add_argument("--places", choices=("coarse", "fine"), default="fine", help="--supervision anchored's places")
    parser.add_argument("--pool-r", type=float, default=5.0, help="log-sum-exp pooling sharpness (presence)")
    parser.add_argument("--modality", default="cxr")
    parser.add_argument("--mean", type=float, nargs=3, default=(0.5, 0.5, 0.5))
    parser.add_argument("--std", type=float, nargs=3, default=(0.5, 0.5, 0.5))
    parser.add_argument("--contrast", choices=("none", "local"), default="none", help="as the recipe's --data.contrast")
    args = parser.parse_args(argv)
    if args.supervision in ("zones", "anchored") and (args.modality != "fundus" or args.classes != "category"):
        parser.error(f"--supervision {args.supervision} places fundus findings: it needs --modality fundus --classes "
                     "category")  # fmt: skip
    if args.categories and args.classes != "category":
        parser.error("--categories needs --classes category")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preprocessing = Preprocessing(
        image_size=args.image_size, mean=tuple(args.mean), std=tuple(args.std), modality=args.modality,
        contrast=args.contrast,
    )  # fmt: skip
    encoder = ImageEncoder(ImageEncoderConfig(args.backbone, args.image_size), embedding_dim=384)
    grid = encoder(torch.zeros(1, 3, args.image_size, args.image_size)).patch_embeddings.shape[-1]
    train = read_phantom(args.corpus, "train").samples
    if args.classes == "category":
        categories = sorted({s.category for s in train})
        if args.categories:
            unknown = sorted(set(args.categories) - set(categories))
            if unknown:
                parser.error(f"--categories {unknown} not in the training split's findings {categories}")
            categories = sorted(args.categories)
            train = [s for s in train if s.category in categories]
        n_classes, pick_class = len(categories), (lambda sample: categories.index(sample.category))
    else:
        train = [s for s in train if s.category in KINDS]
        n_classes, pick_class = len(KINDS) * len(SIDES), class_of
    head = torch.nn.Conv2d(384, n_classes, kernel_size=1)
    paths = list(dict.fromkeys(str(s.image_path) for s in train))[: args.train_images]
    keep = set(paths)
    start = time.perf_counter()
    images, maps = targets([s for s in train if str(s.image_path) in keep], preprocessing, grid, pick_class, n_classes)
    if args.supervision == "presence":  # what a report says: which findings, not where
        maps = (maps.flatten(2).amax(dim=2) > 0).float()
        clear = normal_images(args.corpus, keep, len(images), preprocessing)
        if len(clear):
            images, maps = torch.cat([images, clear]), torch.cat([maps, maps.new_zeros(len(clear), n_classes)])
        print(f"presence labels: {maps.sum(0).tolist()} positives per class of {len(maps)} images "
              f"({len(clear)} of them with no finding)", flush=True)  # fmt: skip
    if args.supervision == "zones":  # what a report says: which findings, and the places its sentences name
        reports = training_reports(args.corpus, [str(Path(p).resolve()) for p in paths])  # the order of `images`
        bags, bag_class, negative = zone_targets(reports, categories, grid)
        print(f"zone bags: {(bag_class >= 0).sum().item()} positive bags on {len(images)} photographs", flush=True)
    if args.supervision == "anchored":  # the places a grader would name, where they truly are on each photograph
        photos = {}
        for sample in train:
            if str(sample.image_path) in keep:
                height, width = sample.image_size or load_image(sample.image_path).shape[:2]
                entry = photos.setdefault(str(sample.image_path), (width, height, []))
                entry[2].extend(Box(*map(float, b), label=sample.category) for b in sample.boxes)
        bags, bag_class, negative = anchored_targets([photos[p] for p in paths], categories, grid, args.places)
        print(f"anchored bags ({args.places}): {(bag_class >= 0).sum().item()} on {len(images)} photographs",
              flush=True)  # fmt: skip
    print(f"loaded {len(images)} training images in {time.perf_counter() - start:.0f} s (not counted)", flush=True)

    parameters = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=args.lr, betas=(0.5, 0.999), weight_decay=1e-6)
    encoder.train()
    steps, start = 0, time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    while time.perf_counter() - start < args.minutes * 60:
        index = torch.randint(len(images), (args.batch,), generator=generator)
        logits = head(encoder(images[index]).patch_embeddings)
        if args.supervision in ("zones", "anchored"):
            loss = place_loss(logits, bags[index], bag_class[index], negative[index], args.pool_r)
        elif args.supervision == "presence":
            loss = F.binary_cross_entropy_with_logits(pooled_logits(logits, args.pool_r), maps[index])
        else:
            loss = F.binary_cross_entropy_with_logits(logits, maps[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 0.25)
        optimizer.step()
        steps += 1
        if steps % 50 == 0:
            print(f"step {steps} loss {loss.item():.4f} {time.perf_counter() - start:.0f} s", flush=True)
    encoder.eval()

    result = {"steps": steps, "train_seconds": args.minutes * 60, **vars(args), "splits": {}}
    for split in args.split:
        test = read_phantom(args.corpus, split).samples
        if args.classes == "kind-side":
            test = [s for s in test if s.category in KINDS]
        test = [s for s in test if args.classes == "kind-side" or s.category in categories]
        if len(test) > args.test:  # evenly spaced, so that every category of a grouped file keeps its share
            test = [test[i] for i in np.linspace(0, len(test) - 1, args.test).round().astype(int)]
        classes = {s.sample_id: pick_class(s) for s in test}
        source = SupervisedSource(encoder, head, preprocessing, classes, args.sigma)
        records, _ = evaluate_localization(test, source, ProtocolConfig(space="native"), workers=0, progress=False)
        summary = summarize_localization(records)  # macro and per finding, with CIs
        result["splits"][split] = {"samples": len(records), **summarize_scores(records), "summary": summary}
        pointing, cnr = summary["pointing_game"], summary["cnr"]
        ci = lambda entry: "[{:.3f}, {:.3f}]".format(*entry["ci"])  # noqa: E731
        print(f"{split} macro: PG {pointing['macro']:.3f} {ci(pointing)} CNR {cnr['macro']:.2f} {ci(cnr)}")
        for name in summary["categories"]:
            p, c = pointing["per_category"][name], cnr["per_category"][name]
            print(f"{split} {name}: PG {p['mean']:.3f} {ci(p)} CNR {c['mean']:.2f} {ci(c)}", flush=True)
    result = to_json_safe({k: (str(v) if isinstance(v, Path) else v) for k, v in result.items()})
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
