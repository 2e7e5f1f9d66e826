"""Saliency (issue 11): seconds from an open sample to its Grad-CAM / EigenCAM overlay, and a pointing game.

Also the activation grid: seconds from an open sample to the PNG mosaic of its top channels.

Pointing game: scikit-image photos (astronaut, chelsea, coffee, rocket; longest side 96-112 px)
pasted at seeded random places on a 224x224 neutral gray canvas; a placement scores when the
Grad-CAM maximum for the model's top class falls inside the pasted photo. ``tests/test_saliency.py``
plays the same game through :func:`pointing_game`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

#: The scikit-image photos of the pointing game: ones ImageNet names well (tabby, espresso,
#: missile / space shuttle, and a person whose top class is a jersey or a suit).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
CANVAS = 224
SIDES = (96, 112)


def placements(n: int, seed: int = 0):
    """``n`` pointing-game canvases: yields ``(canvas PIL image, (left, top, right, bottom) of the
    photo on it, photo name)``, photos in turn, sizes and places seeded."""
    from PIL import Image
    from skimage import data

    photos = {name: Image.fromarray(getattr(data, name)()) for name in PHOTOS}
    rng = np.random.default_rng(seed)
    for i in range(n):
        name = PHOTOS[i % len(PHOTOS)]
        photo = photos[name]
        scale = int(rng.integers(SIDES[0], SIDES[1] + 1)) / max(photo.size)
        w, h = round(photo.width * scale), round(photo.height * scale)
        x, y = int(rng.integers(0, CANVAS - w + 1)), int(rng.integers(0, CANVAS - h + 1))
        canvas = Image.new("RGB", (CANVAS, CANVAS), (128, 128, 128))
        canvas.paste(photo.resize((w, h), Image.Resampling.LANCZOS), (x, y))
        yield canvas, (x, y, x + w, y + h), name


def pointing_game(embedder, n: int = 50, seed: int = 0) -> tuple[float, dict[str, float]]:
    """Share of ``n`` placements whose Grad-CAM maximum (top class) lies in the pasted photo,
    overall and per photo; the map's argmax is taken back to canvas pixels through its ``box``."""
    from embviz.saliency import saliency

    hits: dict[str, list[bool]] = {name: [] for name in PHOTOS}
    for canvas, (x0, y0, x1, y1), name in placements(n, seed):
        s = saliency(embedder, canvas)
        row, col = np.unravel_index(int(np.argmax(s.cam)), s.cam.shape)
        left, top, right, bottom = s.box
        x = left + (col + 0.5) * (right - left) / s.cam.shape[1]
        y = top + (row + 0.5) * (bottom - top) / s.cam.shape[0]
        hits[name].append(bool(x0 <= x < x1 and y0 <= y < y1))
    every = [h for per in hits.values() for h in per]
    return float(np.mean(every)), {k: float(np.mean(v)) for k, v in hits.items() if v}


def _seconds(embedder, path: Path, method: str, calls: int) -> float:
    """Median seconds of ``calls`` runs of open file -> saliency -> overlay, after a warm-up."""
    from embviz.images import open_image
    from embviz.saliency import overlay, saliency

    def once() -> float:
        t0 = time.perf_counter()
        image = open_image(path)
        overlay(image, saliency(embedder, image, method=method))
        return time.perf_counter() - t0

    once()  # warm-up: the layer scan, the CAM copy of the network, lazy imports
    return statistics.median(once() for _ in range(calls))


def _grid_seconds(embedder, path: Path, calls: int) -> float:
    """Median seconds of ``calls`` runs of open file -> the default layer's activations (no
    cache) -> the mosaic of its top 64 channels as PNG bytes, after a warm-up."""
    import io

    from embviz.activations import activations, mosaic
    from embviz.images import open_image
    from embviz.saliency import default_target_layer

    layer = default_target_layer(embedder)

    def once() -> float:
        t0 = time.perf_counter()
        picture, _ = mosaic(activations(embedder, open_image(path), layer))
        picture.save(io.BytesIO(), format="PNG")
        return time.perf_counter() - t0

    once()  # warm-up: the layer scan, the receptive-field shift, lazy imports
    return statistics.median(once() for _ in range(calls))


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """``insight.saliency_seconds`` per model, method and torch thread count;
    ``insight.pointing_game`` for the default model."""
    import torch
    from PIL import Image
    from skimage import data

    from embviz.models import get_embedder

    calls, games = (3, 12) if quick else (10, 50)
    path = work / "insight-chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path, quality=90)  # a 451x300 photo, as a sample file
    records: list[dict] = []

    def add(name: str, value: float, unit: str, **params) -> None:
        records.append({"name": name, "params": params, "value": value, "unit": unit})

    default_threads = torch.get_num_threads()
    models = {
        "efficientnet_lite0": ("gradcam", "eigencam"),
        # Random weights: timing only (the hub is not reachable here).
        "timm:vit_base_patch16_224?pretrained=false": ("gradcam",),
    }
    try:
        for model, methods in models.items():
            embedder = get_embedder(model, device="cpu")
            for threads in sorted({1, default_threads}):
                torch.set_num_threads(threads)
                for method in methods:
                    secs = _seconds(embedder, path, method, calls)
                    params = {"model": model, "method": method, "threads": threads}
                    add("insight.saliency_seconds", secs, "s", size=embedder.image_size, **params)
                if methods == models["efficientnet_lite0"]:  # activations: the default model
                    secs = _grid_seconds(embedder, path, calls)
                    params = {"model": model, "threads": threads, "size": embedder.image_size}
                    add("insight.activation_grid_seconds", secs, "s", **params)
        torch.set_num_threads(1)
        embedder = get_embedder(device="cpu")
        t0 = time.perf_counter()
        share, per_photo = pointing_game(embedder, games)
        add(
            "insight.pointing_game", share, "fraction", model="efficientnet_lite0", placements=games
        )
        print(f"  pointing game per photo: {per_photo}; {time.perf_counter() - t0:.0f} s")
    finally:
        torch.set_num_threads(default_threads)
    return records
