"""Entry script for ``panel serve apps/explorer.py --args DATASET [--reports SETTINGS.yaml]``."""

import argparse
import sys

import panel as pn

from embviz.app.server import explorer_page, warm_up

parser = argparse.ArgumentParser(prog="apps/explorer.py")
parser.add_argument("dataset", nargs="?", default="data/demo", help="dataset directory")
parser.add_argument("--reports", default=None, help="report schedule settings (YAML)")
args = parser.parse_args(sys.argv[1:])
# Once per process: load the shared data and compile the kernels (in a background thread).
pn.state.as_cached(f"embviz-warm-{args.dataset}", lambda: warm_up(args.dataset) or True)
explorer_page(args.dataset, reports=args.reports).servable()
