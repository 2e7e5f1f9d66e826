"""Entry script for ``panel serve apps/explorer.py --args DATASET``."""

import sys

from embviz.app.server import explorer_page

dataset = sys.argv[1] if len(sys.argv) > 1 else "data/demo"
explorer_page(dataset).servable()
