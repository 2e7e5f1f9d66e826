"""Entry script: ``panel serve apps/explorer.py --plugins embviz.app.routes --args DATASET ...``.

Options after ``--args``: one or more dataset folders, then ``--reports FILE`` (report schedule
settings) and ``--scheduler ADDRESS`` (a Dask scheduler whose workers aggregate the frames).
With several datasets, ``/explorer?dataset=KEY`` picks one (KEY: the folder's name).
Installed as ``embviz/apps/explorer.py``: ``embviz serve`` runs it, and
``embviz serve DATASET --print-command`` prints the ``panel serve`` command line for it.
"""

import argparse
import sys

import panel as pn

from embviz.app.server import explorer_page
from embviz.app.warm import warm_up

parser = argparse.ArgumentParser(prog="apps/explorer.py")
parser.add_argument("dataset", nargs="*", default=["data/demo"], help="dataset directories")
parser.add_argument("--reports", default=None, help="report schedule settings (YAML)")
parser.add_argument("--scheduler", default=None, help="Dask scheduler address for the frames")
args = parser.parse_args(sys.argv[1:])
if args.scheduler:  # before the warm-up, so its renderers ask the cluster too (once a process)
    from embviz.render.dask_source import use_scheduler

    use_scheduler(args.scheduler)


def _warm(dataset: str) -> bool:
    try:
        warm_up(dataset)
    except Exception as exc:  # that dataset's page says what is wrong; the others still work
        print(f"embviz: {dataset}: {exc}", file=sys.stderr)
    return True


# Once per process: load the shared data and compile the kernels (in a background thread).
for dataset in args.dataset:
    pn.state.as_cached(f"embviz-warm-{dataset}", lambda d=dataset: _warm(d))
explorer_page(list(args.dataset), reports=args.reports).servable()
