"""The ``embviz`` commands over a built dataset (info, report, export, tag) and the shipped presets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .packaged import PRESETS, preset

__all__ = ["COMMANDS", "add_commands", "print_result", "run"]

#: The subcommands this module adds to ``embviz``.
COMMANDS = ("info", "report", "export", "tag", "preset")


def print_result(result: Any) -> None:
    """Print a step's result (a dataclass or a dict) as JSON on stdout."""
    import dataclasses

    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    print(json.dumps(result, indent=2, default=str))


def _pixels(text: str) -> int:
    value = int(text)
    if value < 16:
        raise argparse.ArgumentTypeError(f"expected at least 16 pixels, got {value}")
    return value


def _id_list(text: str) -> list[int]:
    """Parse comma-separated sample ids (``1,2,3``)."""
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integer ids like 1,2,3, got {text!r}"
        ) from None
    if not ids:
        raise argparse.ArgumentTypeError("expected at least one sample id")
    return ids


def add_commands(sub: Any) -> None:
    """Add the :data:`COMMANDS` subparsers to ``sub`` (argparse's ``add_subparsers()`` result)."""
    s = sub.add_parser("info", help="validate a dataset and print its tables")
    s.add_argument("dataset")

    s = sub.add_parser("report", help="write a self-contained HTML report of a dataset")
    s.add_argument("dataset")
    s.add_argument("--out", required=True, help="HTML file to write, e.g. reports/today.html")
    s.add_argument("--png", action="store_true", help="also write the maps as <stem>-*.png")
    s.add_argument("--title", help="page title (default: embviz report: <dataset name>)")
    s.add_argument("--width", type=_pixels, default=900, help="map width in pixels")
    s.add_argument("--height", type=_pixels, default=640, help="map height in pixels")
    s.add_argument(
        "--index",
        action="store_true",
        help="write index.html beside --out listing its reports (an index embviz wrote "
        "before is always updated)",
    )

    s = sub.add_parser(
        "export", help="write the cleaned manifest, every row with its tags, or the tag list"
    )
    s.add_argument("dataset")
    s.add_argument("--out", required=True, help="file to write: FILE.parquet or FILE.csv")
    s.add_argument(
        "--what",
        default="clean",
        choices=["clean", "all", "tags"],
        help="clean: excluded rows dropped, relabels applied (default); all: every row with "
        "its tags; tags: the tag list",
    )
    s.add_argument(
        "--ids-from",
        help="export only these samples: a text file of ids, or CSV/Parquet with an id column",
    )

    s = sub.add_parser("tag", help="tag samples: exclude, relabel, review, note or a custom tag")
    s.add_argument("dataset")
    s.add_argument("--ids", required=True, type=_id_list, help="sample ids, e.g. 1,2,3")
    s.add_argument("--tag", required=True, help="exclude, relabel, review, note or a custom name")
    s.add_argument("--value", help="the new label (relabel) or the text (note)")
    s.add_argument("--remove", action="store_true", help="remove the tag instead of adding it")
    s.add_argument("--user", help="who tags, for the record (default: the login name)")

    s = sub.add_parser("preset", help="print a YAML file shipped with embviz (or its path)")
    s.add_argument(
        "name",
        choices=sorted(PRESETS),
        help="demo: the demo recipe; reports: an example of report schedule settings",
    )
    s.add_argument("--path", action="store_true", help="print the file's path instead")


def run(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS` parsed into ``args``, print its result; the exit status."""
    cmd = args.command
    if cmd == "info":
        from embviz.dataset import open_dataset

        ds = open_dataset(args.dataset)
        r = {
            "name": ds.name,
            "root": str(ds.root),
            "tables": {
                k: {"rows": v["rows"], "partitions": len(v["partitions"]), "meta": v["meta"]}
                for k, v in ds.tables.items()
            },
            "steps": [s["step"] for s in ds.manifest["steps"]],
        }
    elif cmd == "report":
        from embviz.report import is_embviz_index, update_index, write_report

        r = write_report(
            args.dataset,
            args.out,
            png=args.png,
            title=args.title,
            width=args.width,
            height=args.height,
        )
        folder = Path(args.out).parent
        if args.index or is_embviz_index(folder / "index.html"):
            update_index(folder)
    elif cmd == "export":
        from .export import export

        r = export(args.dataset, out=args.out, what=args.what, ids_from=args.ids_from)
    elif cmd == "tag":
        import getpass

        from embviz.errors import TagError
        from embviz.tags import TagStore

        if args.remove and args.value is not None:
            raise TagError(
                "--value is not used with --remove (a tag is removed whatever its value)"
            )
        user = args.user
        if user is None:
            try:
                user = getpass.getuser()
            except (KeyError, OSError):  # no login name in some containers
                user = None
        store = TagStore(args.dataset)
        if args.remove:
            rows = store.remove(args.ids, args.tag, user=user)
        else:
            rows = store.add(args.ids, args.tag, args.value, user=user)
        r = {"tag": args.tag, "removed" if args.remove else "added": rows, "counts": store.counts()}
    else:  # preset
        path = preset(args.name)
        print(path if args.path else path.read_text(), end="\n" if args.path else "")
        return 0
    print_result(r)
    return 0
