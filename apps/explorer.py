"""Entry script for ``panel serve apps/explorer.py --args DATASET``."""

import sys

import panel as pn

from embviz.app.server import explorer_page, warm_up

dataset = sys.argv[1] if len(sys.argv) > 1 else "data/demo"
# Once per process: load the shared data and compile the kernels (in a background thread).
pn.state.as_cached(f"embviz-warm-{dataset}", lambda: warm_up(dataset) or True)
explorer_page(dataset).servable()
