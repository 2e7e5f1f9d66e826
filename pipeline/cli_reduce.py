"""The ``embviz reduce`` command: one embedding to 2D or 3D, or every member of a series, aligned."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["COMMANDS", "add_commands", "run"]

#: The subcommands this module adds to ``embviz``.
COMMANDS = ("reduce",)

#: Options of a single projection that a series run does not take.
_SINGLE_ONLY = ("embedding", "fit_split", "fit_embedding", "fit_dataset", "name")


def _kv(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` with a YAML value (``n_neighbors=30``, ``metric=cosine``)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, yaml.safe_load(value)


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and value >= 1 else value


def add_commands(sub: Any) -> None:
    """Add the :data:`COMMANDS` subparsers to ``sub`` (argparse's ``add_subparsers()`` result)."""
    s = sub.add_parser("reduce", help="project an embedding (or a series of them) to 2D or 3D")
    s.add_argument("dataset")
    s.add_argument(
        "--embedding",
        help="embedding name, <model>.<layer> (default: the dataset's first, said on stderr)",
    )
    s.add_argument(
        "--series",
        help="project every member of this embedding series (checkpoints or layers), aligned, "
        "with a quality curve; one projection per member",
    )
    s.add_argument(
        "--align",
        choices=["chain", "independent", "aligned-umap"],
        help="with --series: how members are aligned (default chain for umap, else independent)",
    )
    s.add_argument("--method", default="umap", help="pca, umap, tsne, pacmap")
    s.add_argument("--dims", type=int, default=2, choices=[2, 3])
    s.add_argument(
        "--pca", type=_number, help="PCA first: components (int) or variance fraction (0-1)"
    )
    s.add_argument(
        "--sample",
        type=int,
        help="fit on at most this many rows (default 100,000; 50,000 per member with --series)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fit-split", help="fit on this split only (e.g. train), project every row")
    s.add_argument("--fit-embedding", help="fit on this embedding table, project --embedding")
    s.add_argument("--fit-dataset", help="fit on a table of another dataset")
    s.add_argument("--param", action="append", type=_kv, default=[], help="method option key=value")
    s.add_argument("--name", help="projection name")
    s.add_argument("--partition-rows", type=int, default=1_000_000)
    s.add_argument("--scheduler", help="Dask scheduler address")
    s.add_argument("--force", action="store_true", help="recompute even if already done")


def run(args: argparse.Namespace, *, progress: bool = True) -> int:
    """Run ``reduce`` parsed into ``args``, print its result; the exit status."""
    from embviz.errors import ConfigError

    from .cli_data import print_result

    common = {
        "method": args.method,
        "dims": args.dims,
        "pca": args.pca,
        "seed": args.seed,
        "params": dict(args.param),
        "partition_rows": args.partition_rows,
        "scheduler": args.scheduler,
        "progress": progress,
        "force": args.force,
    }
    if args.sample is not None:
        common["sample"] = args.sample
    if args.series is not None:
        from .reduce_series import reduce_series

        given = [k for k in _SINGLE_ONLY if getattr(args, k) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{flag} applies to one embedding; drop it or drop --series")
        print_result(reduce_series(args.dataset, args.series, align=args.align, **common))
        return 0
    if args.align is not None:
        raise ConfigError("--align applies to a series; add --series NAME")
    from .reduce import reduce

    result = reduce(
        args.dataset,
        embedding=args.embedding,
        fit_split=args.fit_split,
        fit_embedding=args.fit_embedding,
        fit_dataset=args.fit_dataset,
        name=args.name,
        **common,
    )
    print_result(result)
    return 0
