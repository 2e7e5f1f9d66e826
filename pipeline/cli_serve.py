"""The ``embviz serve``, ``demo`` and ``loadtest`` commands: Panel's server on the shipped app."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embviz.errors import EmbvizError

__all__ = ["COMMANDS", "ROUTES_PLUGIN", "add_commands", "panel_serve_args", "run"]

log = logging.getLogger(__name__)

#: The subcommands this module adds to ``embviz``.
COMMANDS = ("demo", "serve", "loadtest")
#: The Panel server plugin (``panel serve --plugins``) that declares the image routes.
ROUTES_PLUGIN = "embviz.app.routes"


def _server_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--port", type=int, default=5006)
    s.add_argument("--address", default="localhost", help="interface to listen on")
    s.add_argument("--prefix", help="URL prefix behind a proxy, e.g. /team")
    s.add_argument(
        "--allow-websocket-origin",
        dest="origins",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a host name the page is served under (repeatable; localhost is always allowed)",
    )
    s.add_argument("--show", action="store_true", help="open a browser tab")
    s.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="server processes sharing the port (Panel's --num-procs); the maps are loaded and "
        "the kernels compiled once before they fork, so they share that memory",
    )


def add_commands(sub: Any) -> None:
    """Add the ``demo``, ``serve`` and ``loadtest`` subparsers to ``sub`` (argparse's
    ``add_subparsers()`` result)."""
    s = sub.add_parser("demo", help="build the MNIST demo dataset (and optionally serve it)")
    s.add_argument(
        "--recipe", help="recipe YAML to build (default: the demo recipe shipped with embviz)"
    )
    s.add_argument("--out", help="dataset directory (default: the recipe's, data/demo)")
    s.add_argument(
        "--limit", type=int, help="images to use (default: the recipe's; the demo has 5,000)"
    )
    s.add_argument("--serve", action="store_true", help="serve the explorer when built")
    _server_options(s)

    s = sub.add_parser("serve", help="serve the explorer app for one or more datasets")
    s.add_argument("dataset", nargs="+", help="dataset folders (several: ?dataset=NAME picks one)")
    _server_options(s)
    s.add_argument(
        "--reports",
        default=None,
        help="report schedule settings ('embviz preset reports' prints an example): the "
        "server writes dated reports",
    )
    s.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Dask scheduler (tcp://host:8786) whose workers aggregate the maps' frames from "
        "partitions persisted there; the dataset folder must be readable at the same path on "
        "every worker",
    )
    s.add_argument(
        "--print-command",
        action="store_true",
        help="print the equivalent 'panel serve' command (to add Panel's own options) and exit",
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


def panel_serve_args(
    datasets: Sequence[str | Path],
    *,
    port: int = 5006,
    address: str = "localhost",
    prefix: str | None = None,
    origins: Sequence[str] = (),
    show: bool = False,
    reports: str | Path | None = None,
    scheduler: str | None = None,
    processes: int = 1,
) -> list[str]:
    """The ``panel serve`` arguments that serve the shipped explorer app with its image routes.

    Parameters
    ----------
    datasets : dataset folders; with several, ``?dataset=KEY`` picks one.
    port, address : where the server listens.
    prefix : URL prefix the server is reached under behind a proxy (``/team``).
    origins : further ``host[:port]`` names the page may be opened under (websocket origins);
        ``localhost``, ``127.0.0.1`` and ``address`` on ``port`` are always allowed.
    show : open a browser tab.
    reports : report settings file whose schedule the server runs.
    scheduler : Dask scheduler address whose workers aggregate the frames (``--scheduler``).
    processes : server processes (``--num-procs``); more than one: sessions of one page
        may land in any, and report schedules run in the first.

    Returns the argument list after ``panel serve``: the app entry, ``--plugins
    embviz.app.routes``, the options, then ``--args`` with the datasets (and ``--reports``,
    ``--scheduler``).
    Not ``--warm``: Panel runs it before it reads ``--plugins``, so that page would be built
    as if the routes were missing; the first session starts the warm-up instead. ``embviz
    serve`` also gzips responses, which no ``panel serve`` option does (the printed command
    serves them uncompressed: about 6 MB a first load instead of 1.7).
    """
    from .packaged import explorer_app

    allowed = dict.fromkeys([f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"])
    allowed.update(dict.fromkeys(origins))
    args = [str(explorer_app()), "--plugins", ROUTES_PLUGIN]
    args += ["--port", str(port), "--address", address]
    for origin in allowed:
        args += ["--allow-websocket-origin", origin]
    if prefix:
        args += ["--prefix", prefix]
    if show:
        args.append("--show")
    if processes > 1:
        args += ["--num-procs", str(processes)]
    args += ["--args", *(str(d) for d in datasets)]
    if reports:
        args += ["--reports", str(reports)]
    if scheduler:
        args += ["--scheduler", scheduler]
    return args


def _check(datasets: Sequence[str], reports: str | None) -> None:
    """Fail now, with the file's own message, on what would otherwise fail in every session."""
    from embviz.dataset import open_dataset

    for i, d in enumerate(datasets):
        try:
            open_dataset(d)
        except EmbvizError as exc:
            if len(datasets) == 1:
                raise
            # Several: serve the others; this one's page says what is wrong.
            log.error("dataset %d (%s) cannot be opened: %s", i, d, exc)
    if reports:
        from embviz.config import load_report_settings

        load_report_settings(reports)  # a bad settings file fails now, naming the key


def _serve_command() -> type:
    """Panel's ``serve`` subcommand whose server also gzips its responses (settings
    :func:`embviz.compress.server_settings`, which ``panel serve`` has no option for)."""
    from panel.command.serve import Serve

    from embviz.compress import server_settings

    class EmbvizServe(Serve):
        """``panel serve`` with the explorer's server settings."""

        def customize_kwargs(self, args, server_kwargs):
            """Panel's server options plus :func:`~embviz.compress.server_settings`."""
            return {**super().customize_kwargs(args, server_kwargs), **server_settings()}

    return EmbvizServe


def _serve(
    datasets: Sequence[str],
    args: argparse.Namespace,
    *,
    reports: str | None = None,
    scheduler: str | None = None,
    print_command: bool = False,
) -> int:
    """Run Panel's server (in this process) on the shipped app until interrupted, or print the
    ``panel serve`` command that would."""
    argv = panel_serve_args(
        datasets,
        port=args.port,
        address=args.address,
        prefix=args.prefix,
        origins=args.origins,
        show=args.show,
        reports=reports,
        scheduler=scheduler,
        processes=args.processes,
    )
    if print_command:
        import shlex

        print(shlex.join(["panel", "serve", *argv]))
        return 0
    _check(datasets, reports)
    parser = argparse.ArgumentParser(prog="panel serve")
    command = _serve_command()(parser=parser)  # Panel's `serve`, as `panel serve` runs it
    # The command line `panel serve` would see: the routes plugin starts the report schedule
    # from its `--args ... --reports FILE` as the server starts, before anyone visits.
    sys.argv = ["panel", "serve", *argv]
    return 1 if command.invoke(parser.parse_args(argv)) is False else 0


def _demo(args: argparse.Namespace, progress: bool) -> int:
    from embviz.config import load_recipe

    from .build import build
    from .packaged import preset

    recipe = load_recipe(args.recipe or preset("demo"))
    if args.out:
        recipe.dataset = args.out
        if recipe.source.kind == "mnist":  # its digits are written beside the dataset
            recipe.source.path = f"{Path(args.out)}-images"
    if args.limit is not None:
        recipe.source.limit = args.limit
    r = build(recipe, progress=progress)
    print(f"demo dataset ready: {r.dataset} ({r.seconds:.0f} s)", flush=True)
    return _serve([str(r.dataset)], args) if args.serve else 0


def _loadtest(args: argparse.Namespace) -> int:
    import json

    from embviz.loadtest import run_people, run_sync

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
    print(json.dumps({"url": args.url, "sessions": args.sessions, **got.summary()}, indent=2))
    return 0


def run(args: argparse.Namespace, *, progress: bool = True) -> int:
    """Run one of :data:`COMMANDS` parsed into ``args``; returns the exit status.

    ``progress``: show the build's progress bars (``demo``)."""
    if args.command == "demo":
        return _demo(args, progress)
    if args.command == "serve":
        return _serve(
            args.dataset,
            args,
            reports=args.reports,
            scheduler=args.scheduler,
            print_command=args.print_command,
        )
    if args.command == "loadtest":
        return _loadtest(args)
    raise AssertionError(args.command)  # pragma: no cover - add_commands defines the commands
