"""The ``embviz cluster`` command: named clusters at several levels on a dataset's 2D maps."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["COMMANDS", "add_commands", "run"]

#: The subcommands this module adds to ``embviz``.
COMMANDS = ("cluster",)


def _sizes(text: str) -> list[int]:
    """Parse ascending comma-separated cluster counts (``8,32,128``)."""
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated cluster counts like 8,32,128, got {text!r}"
        ) from None
    if not sizes or any(k < 1 for k in sizes) or sizes != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(f"expected ascending positive counts, got {text!r}")
    return sizes


def add_commands(sub: Any) -> None:
    """Add the :data:`COMMANDS` subparsers to ``sub`` (argparse's ``add_subparsers()`` result)."""
    s = sub.add_parser(
        "cluster",
        help="clusters at several levels on each 2D map, named by majority label or prompts",
    )
    s.add_argument("dataset")
    s.add_argument("--projection", help="one 2D projection (default: every 2D projection)")
    s.add_argument(
        "--levels", type=int, default=3, help="levels, coarse to fine: 8, 32, 128 ... clusters"
    )
    s.add_argument("--sizes", type=_sizes, help="clusters per level instead, e.g. 10,40")
    s.add_argument(
        "--prompts",
        metavar="FILE",
        help="name clusters by the best of these texts (one a line; CLIP-like models only)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="recompute even if already done")


def run(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS` parsed into ``args``, print its result; the exit status."""
    from .cli_data import print_result
    from .cluster import cluster

    print_result(
        cluster(
            args.dataset,
            projection=args.projection,
            levels=args.levels,
            sizes=args.sizes,
            prompts=args.prompts,
            seed=args.seed,
            force=args.force,
        )
    )
    return 0
