"""``python -m training.phantoms generate|generate-fundus|contact-sheet|examples ...`` (see --help)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from afloc.commands import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.phantoms", description="PhantomCXR and PhantomFundus synthetic corpora"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write a corpus (images, manifest.csv, COCO JSON, DICOM samples)")
    gen.add_argument("--out", required=True, help="output folder (must not hold a corpus yet)")
    gen.add_argument("--n", type=int, required=True, help="number of studies")
    gen.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--splits", default="0.8,0.1,0.1", help="train,val,test fractions")
    gen.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    gen.add_argument("--dicom-samples", type=int, default=4, help="test films also written as DICOM")
    fundus = commands.add_parser("generate-fundus", help="write a PhantomFundus corpus (RGB photographs, same formats)")
    fundus.add_argument("--out", required=True, help="output folder (must not hold a corpus yet)")
    fundus.add_argument("--n", type=int, required=True, help="number of photographs")
    fundus.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    fundus.add_argument("--seed", type=int, default=0)
    fundus.add_argument("--splits", default="0.8,0.1,0.1", help="train,val,test fractions")
    fundus.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    sheet = commands.add_parser("contact-sheet", help="a PNG grid of examples with boxes and report excerpts")
    sheet.add_argument("--out", required=True, help="PNG file to write")
    sheet.add_argument("--count", type=int, default=16)
    sheet.add_argument("--size", type=int, default=256)
    sheet.add_argument("--seed", type=int, default=0)
    sheet.add_argument("--start", type=int, default=0, help="first case index")
    sheet.add_argument("--modality", choices=["cxr", "fundus"], default="cxr")
    sheet.add_argument("--tile", type=int, default=256, help="tile side in pixels")
    examples = commands.add_parser("examples", help="demo examples (one per finding + DICOMs) with ground truth")
    examples.add_argument("--out", required=True, help="folder, e.g. assets/examples")
    examples.add_argument("--size", type=int, default=256)
    examples.add_argument("--modality", choices=["cxr", "fundus"], default="cxr")
    args = parser.parse_args(argv)

    from .generate import CorpusSpec, generate_corpus

    if args.command == "generate":
        fractions = tuple(float(v) for v in args.splits.split(","))
        spec = CorpusSpec(n=args.n, size=args.size, seed=args.seed, split_fractions=fractions)
        start = time.perf_counter()
        counts = generate_corpus(args.out, spec, workers=args.workers, dicom_samples=args.dicom_samples)
        elapsed = time.perf_counter() - start
        print(f"wrote {args.n} studies {counts} to {args.out} in {elapsed:.1f} s ({args.n / elapsed:.0f} img/s)")
    elif args.command == "generate-fundus":
        from .fundus.generate import generate_fundus_corpus

        fractions = tuple(float(v) for v in args.splits.split(","))
        spec = CorpusSpec(n=args.n, size=args.size, seed=args.seed, split_fractions=fractions)
        start = time.perf_counter()
        counts = generate_fundus_corpus(args.out, spec, workers=args.workers)
        elapsed = time.perf_counter() - start
        print(f"wrote {args.n} photographs {counts} to {args.out} in {elapsed:.1f} s ({args.n / elapsed:.0f} img/s)")
    elif args.command == "examples":
        from .examples import write_examples, write_fundus_examples

        write = write_fundus_examples if args.modality == "fundus" else write_examples
        for path in write(args.out, size=args.size):
            print(f"wrote {path}")
    else:
        import cv2

        from .figures import contact_sheet

        if args.modality == "fundus":
            from .fundus.generate import generate_fundus_case as case_fn
        else:
            from .generate import generate_case as case_fn
        spec = CorpusSpec(n=args.start + args.count, size=args.size, seed=args.seed)
        grid = contact_sheet(spec, args.count, start=args.start, tile=args.tile, case_fn=case_fn)
        path = Path(args.out)
        if not path.parent.is_dir():
            raise ValueError(f"folder {str(path.parent)!r} does not exist")
        cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
