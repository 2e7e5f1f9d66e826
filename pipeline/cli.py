"""The ``embviz`` command line: a thin argparse layer over the pipeline steps and the app."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embviz.errors import EmbvizError

__all__ = ["main"]


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

    s = sub.add_parser("embed", help="embed every image with a model (resumable)")
    s.add_argument("dataset")
    s.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (offline default), timm:NAME, hf:ID_OR_FOLDER, tv:NAME",
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

    s = sub.add_parser("layers", help="list a model's layers and their output shapes")
    s.add_argument("model")
    s.add_argument("--image-size", type=int)

    s = sub.add_parser("reduce", help="project an embedding to 2D or 3D")
    s.add_argument("dataset")
    s.add_argument("--embedding", help="embedding name (default: the first)")
    s.add_argument("--method", default="umap", help="pca, umap, tsne, pacmap")
    s.add_argument("--dims", type=int, default=2, choices=[2, 3])
    s.add_argument(
        "--pca", type=_number, help="PCA first: components (int) or variance fraction (0-1)"
    )
    s.add_argument("--sample", type=int, default=100_000, help="fit on at most this many rows")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fit-split", help="fit on this split only (e.g. train), project every row")
    s.add_argument("--fit-embedding", help="fit on this embedding table, project --embedding")
    s.add_argument("--fit-dataset", help="fit on a table of another dataset")
    s.add_argument("--param", action="append", type=_kv, default=[], help="method option key=value")
    s.add_argument("--name", help="projection name")
    s.add_argument("--partition-rows", type=int, default=1_000_000)
    s.add_argument("--scheduler", help="Dask scheduler address")
    s.add_argument("--force", action="store_true", help="recompute even if already done")

    s = sub.add_parser("index", help="build a nearest-neighbour index and every row's k neighbours")
    s.add_argument("dataset")
    s.add_argument("--embedding", required=True, help="embedding name (<model>.<layer>)")
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
    s.add_argument("--embedding", help="embedding name (default: the first)")
    s.add_argument("-k", type=int, default=10, help="neighbours per row the scores use")
    s.add_argument("--clusters", type=int, help="k-means clusters (default 20, fewer if tiny)")
    s.add_argument(
        "--near-threshold", type=float, help="near-duplicate embedding distance (default adaptive)"
    )
    s.add_argument("--force", action="store_true", help="recompute even if already done")

    s = sub.add_parser("build", help="run a YAML recipe end to end")
    s.add_argument("config")
    s.add_argument("--dataset", help="override the recipe's dataset directory")
    s.add_argument("--scheduler", help="Dask scheduler address")

    s = sub.add_parser("demo", help="build the MNIST demo dataset (and optionally serve it)")
    s.add_argument("--out", help="dataset directory (default: the recipe's, data/demo)")
    s.add_argument("--serve", action="store_true", help="serve the explorer when built")
    s.add_argument("--port", type=int, default=5006)

    s = sub.add_parser("synth", help="write a synthetic dataset of N points for scale work")
    s.add_argument("--points", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--partition-rows", type=int, default=1_000_000)
    s.add_argument("--scheduler", help="Dask scheduler address")

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

    s = sub.add_parser("serve", help="serve the explorer app for one or more datasets")
    s.add_argument("dataset", nargs="+", help="dataset folders (several: ?dataset=NAME picks one)")
    s.add_argument("--port", type=int, default=5006)
    s.add_argument("--address", default="localhost")
    s.add_argument("--show", action="store_true", help="open a browser tab")
    s.add_argument(
        "--reports",
        default=None,
        help="report schedule settings (config/reports.yaml): the server writes dated reports",
    )

    s = sub.add_parser(
        "loadtest",
        help="N simulated people pan and zoom a running server's map; frame latency percentiles",
    )
    s.add_argument("url", help="the explorer page, e.g. http://localhost:5006/explorer")
    s.add_argument("--sessions", type=int, default=10, help="people at once")
    s.add_argument("--seconds", type=float, default=30.0, help="how long they pan and zoom")
    s.add_argument(
        "--think", type=float, default=0.5, help="seconds between a frame and the next move"
    )
    s.add_argument("--dataset", help="the dataset key on a server with several (?dataset=KEY)")
    s.add_argument("--cookie", help="Cookie header of a logged-in browser, for a server with login")
    return p


def _summary(result: Any) -> str:
    import dataclasses

    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    return json.dumps(result, indent=2, default=str)


def _run(args: argparse.Namespace) -> int:
    progress = not args.quiet
    cmd = args.command
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
        )
    elif cmd == "embed":
        from .embed import embed

        r = embed(
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
    elif cmd == "reduce":
        from .reduce import reduce

        r = reduce(
            args.dataset,
            embedding=args.embedding,
            method=args.method,
            dims=args.dims,
            pca=args.pca,
            sample=args.sample,
            seed=args.seed,
            fit_split=args.fit_split,
            fit_embedding=args.fit_embedding,
            fit_dataset=args.fit_dataset,
            params=dict(args.param),
            name=args.name,
            partition_rows=args.partition_rows,
            scheduler=args.scheduler,
            progress=progress,
            force=args.force,
        )
    elif cmd == "build":
        from .build import build

        r = build(args.config, dataset=args.dataset, scheduler=args.scheduler, progress=progress)
    elif cmd == "demo":
        from .build import build
        from .demo import DEMO_RECIPE

        r = build(DEMO_RECIPE, dataset=args.out, progress=progress)
        print(f"demo dataset ready: {r.dataset} ({r.seconds:.0f} s)")
        if args.serve:
            from embviz.app.server import serve

            serve(r.dataset, port=args.port)
        return 0
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
    elif cmd == "info":
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
    elif cmd == "serve":
        from embviz.app.server import serve

        serve(
            [Path(d) for d in args.dataset] if len(args.dataset) > 1 else Path(args.dataset[0]),
            port=args.port,
            address=args.address,
            show=args.show,
            reports=args.reports,
        )
        return 0
    elif cmd == "loadtest":
        from embviz.app.loadtest import run_people, run_sync

        got = run_sync(
            run_people(
                args.url,
                sessions=args.sessions,
                seconds=args.seconds,
                think=args.think,
                arguments={"dataset": args.dataset} if args.dataset else None,
                headers={"Cookie": args.cookie} if args.cookie else None,
            )
        )
        r = {"url": args.url, "sessions": args.sessions, **got.summary()}
    else:  # pragma: no cover - argparse rejects unknown commands
        raise AssertionError(cmd)
    print(_summary(r))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``embviz`` console script; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except EmbvizError as exc:
        print(f"embviz {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"embviz {args.command}: interrupted; re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
