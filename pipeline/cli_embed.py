"""The ``embviz embed`` and ``embviz train`` commands: embed with a model (or each of its checkpoints), train the demo's CNN."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "add_commands", "checkpoint_list", "run"]

#: The subcommands this module adds to ``embviz``.
COMMANDS = ("embed", "train")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def checkpoint_list(text: str) -> list[str]:
    """Parse ``--checkpoints``: one folder, file or revision, or several separated by commas."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a folder, a file, or files separated by commas")
    return items


def _members(model: str, items: list[str] | None) -> str | list[str] | None:
    """``--checkpoints`` for :func:`~embviz.pipeline.embed.embed`: paths made absolute (on a
    command line they are relative to the working directory), one item as a folder or file;
    an ``hf:`` model's revisions unchanged."""
    from embviz.models import parse_model_name

    if items is None or parse_model_name(model)[0] == "hf":
        return items
    paths = [str(Path(t).expanduser().absolute()) for t in items]
    return paths[0] if len(paths) == 1 else paths


def add_commands(sub: Any) -> None:
    """Add the :data:`COMMANDS` subparsers to ``sub`` (argparse's ``add_subparsers()`` result)."""
    s = sub.add_parser("embed", help="embed every image with a model (resumable)")
    s.add_argument("dataset")
    s.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (offline default), cnn, timm:NAME, hf:ID_OR_FOLDER, tv:NAME",
    )
    s.add_argument(
        "--layer", dest="layers", action="append", help="layer name (repeatable; default pooled)"
    )
    s.add_argument("--reshape", default="mean", help="mean, flatten, avg_pool_NxN or cls")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--image-size", type=int, help="resize input to this many pixels")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda")
    s.add_argument("--threads", type=int, default=2, help="decode threads")
    s.add_argument("--name", help="embedding name prefix (default: the model's slug)")
    s.add_argument("--scheduler", help="Dask scheduler address to run on a cluster")
    s.add_argument("--force", action="store_true", help="re-embed even if already done")
    s.add_argument(
        "--predict",
        action="store_true",
        help="also write the model head's predictions from the same forward passes",
    )
    s.add_argument("--class-names", help="with --predict: a file naming the logits")
    s.add_argument(
        "--top-k", type=_positive, default=10, help="with --predict: classes kept per sample"
    )
    s.add_argument(
        "--checkpoints",
        type=checkpoint_list,
        metavar="DIR|A.pt,B.pt",
        help="embed with each checkpoint of --model in turn, one table per checkpoint, as a "
        "series: a folder of .pt/.pth/.ckpt/.bin files (natural order: epoch-2 before "
        "epoch-10) or files separated by commas (in that order); hf: models take revisions "
        "(main,v1.0,<commit>)",
    )
    s.add_argument(
        "--series",
        help="the series' name (default <name>-checkpoints, or <name>-layers for several layers)",
    )

    s = sub.add_parser(
        "train",
        help="train the demo's small digit CNN, saving a checkpoint per epoch",
        description="Train the 'cnn' model on the dataset's train split (labels 0-9) and test "
        "it on its test split, saving epoch-000.pt (untrained) to epoch-<N>.pt and "
        "training.json. A finished run with the same options is kept. Then: embviz embed "
        "DATASET --model cnn --checkpoints DATASET/checkpoints",
    )
    s.add_argument("dataset")
    s.add_argument("--epochs", type=_positive, default=4)
    s.add_argument(
        "--out", help="checkpoint folder (default: <dataset>/checkpoints; relative: to here)"
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=_positive, default=64)
    s.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate")


def run(args: argparse.Namespace, *, progress: bool = True) -> int:
    """Run one of :data:`COMMANDS` parsed into ``args``, print its result; the exit status."""
    from .cli_data import print_result

    if args.command == "train":
        from .train_demo import train_cnn

        out = Path(args.out).absolute() if args.out else "checkpoints"
        result = train_cnn(
            args.dataset,
            out,
            epochs=args.epochs,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            progress=progress,
        )
        print_result(result)
        print(
            f"test accuracy {result.test_accuracy:.4f} after {args.epochs} epochs; "
            f"checkpoints in {result.out_dir}",
            file=sys.stderr,
        )
        return 0
    from .embed import embed

    print_result(
        embed(
            args.dataset,
            model=args.model,
            layers=args.layers,
            reshape=args.reshape,
            batch_size=args.batch_size,
            image_size=args.image_size,
            device=args.device,
            threads=args.threads,
            name=args.name,
            scheduler=args.scheduler,
            progress=progress,
            force=args.force,
            predict=args.predict,
            class_names=args.class_names,
            top_k=args.top_k,
            checkpoints=_members(args.model, args.checkpoints),
            series=args.series,
        )
    )
    return 0
