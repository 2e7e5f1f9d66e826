"""A curation test bed: the demo's MNIST folder with planted label flips, duplicates and outliers."""

from __future__ import annotations

import json
import shutil
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from embviz.storage import atomic_write_bytes, atomic_write_json

from .demo import write_mnist_folder

__all__ = ["NEAR_CHANGES", "OOD_PHOTOS", "TRUTH_FILE", "read_truth", "write_planted_folder"]

#: The ground-truth file written at the folder's root (not an image, so ingest skips it).
TRUTH_FILE = "_planted.json"

#: How near-duplicate copies differ from their original, used in turn.
NEAR_CHANGES = ("shift", "noise", "brightness", "jpeg")

#: scikit-image's bundled photos and textures (no download) that out-of-distribution images
#: are cropped from.
OOD_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "cell",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "rocket",
    "text",
)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _read_gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8)


def _near_copy(pixels: np.ndarray, change: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """A slightly changed copy of a 28x28 digit as ``(file bytes, extension)``."""
    from PIL import Image

    x = pixels.astype(np.float32)
    if change == "shift":
        # One pixel right (or down): MNIST borders are black, so nothing is lost.
        axis = int(rng.integers(0, 2))
        x = np.roll(x, 1, axis=axis)
    elif change == "noise":
        x = x + rng.normal(0.0, 8.0, size=x.shape)
    elif change == "brightness":
        x = x * 0.8
    elif change == "jpeg":
        buf = BytesIO()
        Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=75)
        return buf.getvalue(), ".jpg"
    else:
        raise ValueError(f"unknown change {change!r}; valid: {list(NEAR_CHANGES)}")
    return _png(np.clip(np.rint(x), 0, 255)), ".png"


def _ood_image(n: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 grayscale crop of one of scikit-image's photos, at a random place and scale."""
    import skimage.data
    from PIL import Image

    photo = getattr(skimage.data, OOD_PHOTOS[n % len(OOD_PHOTOS)])()
    img = Image.fromarray(np.asarray(photo)).convert("L")
    w, h = img.size
    side = int(rng.integers(min(w, h) // 4, min(w, h) + 1))
    left = int(rng.integers(0, w - side + 1))
    top = int(rng.integers(0, h - side + 1))
    crop = img.crop((left, top, left + side, top + side)).resize((28, 28), Image.BILINEAR)
    return np.asarray(crop, dtype=np.uint8)


def write_planted_folder(
    out: str | Path,
    *,
    limit: int = 5000,
    flip_fraction: float = 0.05,
    exact: int = 50,
    near: int = 50,
    ood: int = 50,
    seed: int = 0,
) -> Path:
    """Write the demo's MNIST folder with known problems planted, and their ground truth.

    Starting from :func:`embviz.pipeline.demo.write_mnist_folder` (``<split>/<digit>/<n>.png``):

    - ``flip_fraction`` of the digits move to a wrong digit's folder (a label flip);
    - ``exact`` other digits get a byte-identical copy ``exact-NNN.png`` in the other split;
    - ``near`` other digits get a slightly changed copy ``near-NNN-<change>``, the change taken
      in turn from :data:`NEAR_CHANGES` (1 px shift, Gaussian noise sigma 8, 80% brightness,
      JPEG quality 75), alternately in the same and the other split;
    - ``ood`` out-of-distribution images ``test/ood-NNN.png`` (no label folder, so unlabelled):
      28x28 grayscale crops of scikit-image's bundled photos and textures (:data:`OOD_PHOTOS`).

    The sets of digits flipped, copied exactly and copied nearly do not overlap. The ground
    truth goes to ``out/_planted.json`` (:data:`TRUTH_FILE`, read it with :func:`read_truth`):
    paths relative to ``out`` with ``/``, so they match the samples' ``uri`` after ingest. A
    finished folder with the same options is kept; another one written here is replaced.

    Returns the folder path.
    """
    out = Path(out)
    options = {
        "limit": limit,
        "flip_fraction": flip_fraction,
        "exact": exact,
        "near": near,
        "ood": ood,
        "seed": seed,
    }
    truth_path = out / TRUTH_FILE
    if truth_path.exists() and read_truth(out).get("options") == options:
        return out
    if (out / "_complete.json").exists():
        shutil.rmtree(out)  # a folder this function (or the demo) wrote: start clean
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty and not a planted folder; choose a new folder")
    write_mnist_folder(out, limit=limit, seed=seed)

    files = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*/*.png"))
    rng = np.random.default_rng(seed + 1)
    n_flip = int(round(flip_fraction * len(files)))
    if n_flip + exact + near > len(files):
        raise ValueError(
            f"{n_flip} flips + {exact} exact + {near} near copies need more than {len(files)} digits"
        )
    chosen = rng.permutation(len(files))
    flip_rows = chosen[:n_flip]
    exact_rows = chosen[n_flip : n_flip + exact]
    near_rows = chosen[n_flip + exact : n_flip + exact + near]
    other_split = {"train": "test", "test": "train"}

    flipped: dict[str, dict[str, str]] = {}
    for row in flip_rows:
        split, digit, name = files[row].split("/")
        wrong = str((int(digit) + int(rng.integers(1, 10))) % 10)
        dest = out / split / wrong / name
        (out / files[row]).rename(dest)
        flipped[f"{split}/{wrong}/{name}"] = {"given": wrong, "true": digit}

    exact_pairs: list[dict[str, str]] = []
    for n, row in enumerate(exact_rows):
        split, digit, _ = files[row].split("/")
        copy = f"{other_split[split]}/{digit}/exact-{n:03d}.png"
        atomic_write_bytes(out / copy, (out / files[row]).read_bytes())
        exact_pairs.append({"copy": copy, "original": files[row]})

    near_pairs: list[dict[str, str]] = []
    for n, row in enumerate(near_rows):
        split, digit, _ = files[row].split("/")
        change = NEAR_CHANGES[n % len(NEAR_CHANGES)]
        data, ext = _near_copy(_read_gray(out / files[row]), change, rng)
        where = split if n % 2 == 0 else other_split[split]
        copy = f"{where}/{digit}/near-{n:03d}-{change}{ext}"
        atomic_write_bytes(out / copy, data)
        near_pairs.append({"copy": copy, "original": files[row], "change": change})

    outliers: list[dict[str, str]] = []
    for n in range(ood):
        path = f"test/ood-{n:03d}.png"
        atomic_write_bytes(out / path, _png(_ood_image(n, rng)))
        outliers.append({"path": path, "source": OOD_PHOTOS[n % len(OOD_PHOTOS)]})

    truth: dict[str, Any] = {
        "options": options,
        "flipped": flipped,
        "exact": exact_pairs,
        "near": near_pairs,
        "ood": outliers,
    }
    atomic_write_json(truth_path, truth)
    return out


def read_truth(folder: str | Path) -> dict[str, Any]:
    """The ground truth :func:`write_planted_folder` wrote into ``folder``."""
    path = Path(folder) / TRUTH_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FileNotFoundError(
            f"{path}: no planted ground truth ({exc}); run write_planted_folder first"
        ) from exc
