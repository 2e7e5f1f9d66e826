"""The ``embviz`` command line: argparse over the pipeline steps (more commands: cli_cluster, cli_data, cli_embed, cli_reduce, cli_serve)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from embviz.errors import EmbvizError
from embviz.storage import disk_full

from . import cli_cluster, cli_data, cli_embed, cli_reduce, cli_serve
from .cli_data import print_result

__all__ = ["main"]

EMBEDDING_HELP = "embedding name, <model>.<layer> (default: the dataset's first, said on stderr)"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embviz", description="Explore embeddings of image datasets.")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "ingest", help="create a dataset from an image folder, a manifest or vectors"
    )
    s.add_argument("source", help="image folder, CSV/Parquet manifest, or .npy/Parquet vectors")
    s.add_argument("--out", required=True, help="dataset directory to create or update")
    s.add_argument("--kind", default="auto", choices=["auto", "folder", "manifest", "vectors"])
    s.add_argument("--name", help="dataset name (default: the directory name)")
    s.add_argument("--partition-rows", type=int, default=10_000)
    s.add_argument("--thumb-size", type=int, default=96)
    s.add_argument("--max-pixels", type=int, default=100_000_000, help="refuse larger images")
    s.add_argument("--threads", type=int, default=2, help="decode threads")
    s.add_argument("--limit", type=int, help="ingest at most this many files")
    s.add_argument("--metadata", help="CSV/Parquet with one row per vector (for .npy input)")
    s.add_argument("--vector-column", default="vector")
    s.add_argument(
        "--coords", help="comma-separated coordinate columns of the vectors file, e.g. x,y"
    )
    s.add_argument("--embedding-name", default="user")
    s.add_argument(
        "--force", action="store_true", help="re-ingest even if the inputs are unchanged"
    )
    s.add_argument(
        "--strict",
        action="store_true",
        help="refuse a vectors file whose --coords hold NaN or inf (default: keep those rows "
        "off the map and count them)",
    )

    cli_embed.add_commands(sub)  # embed, train

    s = sub.add_parser("layers", help="list a model's layers and their output shapes")
    s.add_argument("model")
    s.add_argument("--image-size", type=int)

    cli_reduce.add_commands(sub)  # reduce, also of a series

    s = sub.add_parser("index", help="build a nearest-neighbour index and every row's k neighbours")
    s.add_argument("dataset")
    s.add_argument("--embedding", help=EMBEDDING_HELP)
    s.add_argument("-k", type=int, default=10, help="neighbours stored per row")
    s.add_argument("--metric", default="cosine", choices=["cosine", "l2"])
    s.add_argument(
        "--exact-below", type=int, default=200_000, help="exact search up to this many rows"
    )
    s.add_argument("--force", action="store_true", help="rebuild even if already done")

    s = sub.add_parser(
        "score", help="per-sample scores: outliers, label issues, duplicates, clusters"
    )
    s.add_argument("dataset")
    s.add_argument("--embedding", help=EMBEDDING_HELP)
    s.add_argument("-k", type=int, default=10, help="neighbours per row the scores use")
    s.add_argument("--clusters", type=int, help="k-means clusters (default 20, fewer if tiny)")
    s.add_argument(
        "--near-threshold", type=float, help="near-duplicate embedding distance (default adaptive)"
    )
    s.add_argument("--force", action="store_true", help="recompute even if already done")

    s = sub.add_parser(
        "predict", help="a classifier's top-k, confidence, margin and entropy per sample"
    )
    s.add_argument("dataset")
    s.add_argument(
        "--source",
        default="probe",
        choices=["probe", "head"],
        help="probe: a linear probe on an embedding, out-of-fold; head: the model's classifier",
    )
    s.add_argument("--embedding", help=EMBEDDING_HELP + " (probe)")
    s.add_argument("--model", default="efficientnet_lite0", help="the classifier (head)")
    s.add_argument("--image-size", type=int, help="input size in pixels (head)")
    s.add_argument("--batch-size", type=int, default=64, help="images per forward pass (head)")
    s.add_argument("--class-names", help="a file naming the logits, one per line (head)")
    s.add_argument("-k", type=int, default=10, help="classes kept per sample")
    s.add_argument("--folds", type=int, default=5, help="probe cross-validation folds")
    s.add_argument("--scheduler", help="Dask scheduler address (head)")
    s.add_argument("--force", action="store_true", help="recompute even if already done")

    s = sub.add_parser(
        "saliency",
        help="precompute saliency maps (default: of the report's label-issue gallery)",
        description="Compute saliency maps of some samples into the dataset's cache "
        "(cache/saliency/, safe to delete), where the app's Explain button and 'embviz report' "
        "find them. Without --ids-from or --top-label-issues: the samples the report's "
        "label-issue gallery shows. Needs 'embviz predict' first.",
    )
    s.add_argument("dataset")
    which = s.add_mutually_exclusive_group()
    which.add_argument(
        "--ids-from",
        metavar="FILE",
        help="these samples: a text file of ids (one a line; blank lines and # comments are "
        "skipped) or a CSV/Parquet file with an integer 'id' column",
    )
    which.add_argument(
        "--top-label-issues",
        type=_positive,
        metavar="N",
        help="the N samples with the highest label_issue_score (default: the report's gallery)",
    )
    s.add_argument(
        "--method",
        dest="methods",
        action="append",
        choices=["gradcam", "eigencam"],
        help="saliency method (repeatable; default gradcam)",
    )
    s.add_argument(
        "--class",
        dest="target",
        default="top",
        choices=["top", "label"],
        help="the class explained: top (the top prediction, default) or label (the sample's own)",
    )

    s = sub.add_parser("build", help="run a YAML recipe end to end")
    s.add_argument("config")
    s.add_argument("--dataset", help="override the recipe's dataset directory")
    s.add_argument("--scheduler", help="Dask scheduler address")

    s = sub.add_parser("synth", help="write a synthetic dataset of N points for scale work")
    s.add_argument("--points", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--partition-rows", type=int, default=1_000_000)
    s.add_argument("--scheduler", help="Dask scheduler address")

    cli_cluster.add_commands(sub)
    cli_data.add_commands(sub)
    cli_serve.add_commands(sub)
    return p


def _run(args: argparse.Namespace) -> int:
    progress = not args.quiet
    cmd = args.command
    if cmd in cli_serve.COMMANDS:
        return cli_serve.run(args, progress=progress)
    if cmd in cli_data.COMMANDS:
        return cli_data.run(args)
    if cmd in cli_cluster.COMMANDS:
        return cli_cluster.run(args)
    if cmd in cli_embed.COMMANDS:
        return cli_embed.run(args, progress=progress)
    if cmd in cli_reduce.COMMANDS:
        return cli_reduce.run(args, progress=progress)
    if cmd == "ingest":
        from .ingest import ingest

        coords = args.coords.split(",") if args.coords else None
        r = ingest(
            args.out,
            source=args.source,
            kind=args.kind,
            name=args.name,
            partition_rows=args.partition_rows,
            thumb_size=args.thumb_size,
            max_pixels=args.max_pixels,
            threads=args.threads,
            limit=args.limit,
            metadata=args.metadata,
            vector_column=args.vector_column,
            coord_columns=coords,
            embedding_name=args.embedding_name,
            progress=progress,
            force=args.force,
            strict=args.strict,
        )
    elif cmd == "layers":
        from .embed import list_layers

        for name, shape in list_layers(args.model, image_size=args.image_size):
            print(f"{name}\t{tuple(shape)}")
        return 0
    elif cmd == "index":
        from .index import index

        r = index(
            args.dataset,
            embedding=args.embedding,
            k=args.k,
            metric=args.metric,
            exact_below=args.exact_below,
            force=args.force,
            progress=progress,
        )
    elif cmd == "predict":
        from .predict import predict

        r = predict(
            args.dataset,
            source=args.source,
            embedding=args.embedding,
            model=args.model,
            image_size=args.image_size,
            batch_size=args.batch_size,
            class_names=args.class_names,
            k=args.k,
            folds=args.folds,
            scheduler=args.scheduler,
            force=args.force,
            progress=progress,
        )
    elif cmd == "score":
        from .score import score

        r = score(
            args.dataset,
            embedding=args.embedding,
            k=args.k,
            clusters=args.clusters,
            near_threshold=args.near_threshold,
            force=args.force,
            progress=progress,
        )
    elif cmd == "saliency":
        from .saliency import saliency

        r = saliency(
            args.dataset,
            ids_from=args.ids_from,
            top_label_issues=args.top_label_issues,
            methods=args.methods or ("gradcam",),
            target=args.target,
            progress=progress,
        )
        print_result(r)
        if r.failed and not r.computed + r.cached:
            print(
                f"embviz saliency: error: no map could be made ({len(r.failed)} samples failed)",
                file=sys.stderr,
            )
            return 1
        return 0
    elif cmd == "build":
        from .build import build

        r = build(args.config, dataset=args.dataset, scheduler=args.scheduler, progress=progress)
    elif cmd == "synth":
        from .synth import synth

        r = synth(
            args.out,
            points=args.points,
            seed=args.seed,
            partition_rows=args.partition_rows,
            scheduler=args.scheduler,
            progress=progress,
        )
    else:  # pragma: no cover - argparse rejects unknown commands
        raise AssertionError(cmd)
    print_result(r)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``embviz`` console script; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        with disk_full(None):  # also a full disk met outside embviz.storage's atomic writes
            return _run(args)
    except EmbvizError as exc:
        print(f"embviz {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"embviz {args.command}: interrupted; re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
