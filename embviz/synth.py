"""Synthetic data generation: clustered 2-D/3-D points, labels, splits, metadata and sprite images."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SOURCES", "SPLITS", "SynthSpec", "draw_sprite", "generate_part", "make_spec"]

#: Split names and their base proportions; drift clusters shift weight to ``prod``.
SPLITS = ("train", "test", "prod")
_SPLIT_P = np.array([0.7, 0.15, 0.15])
_DRIFT_P = np.array([0.2, 0.05, 0.75])
#: Values of the ``source`` metadata column.
SOURCES = ("camera_a", "camera_b", "web", "partner")

_SIZES = np.array([[640, 480], [500, 375], [224, 224], [1024, 768], [800, 600], [375, 500]])


@dataclass(frozen=True)
class SynthSpec:
    """The generating distribution: drawn once from the seed, shared by every partition."""

    seed: int
    clusters: int
    labels: int
    sprites: int
    weights: np.ndarray  #: (k,) probability of each cluster among clustered points
    centers2: np.ndarray  #: (k, 2)
    centers3: np.ndarray  #: (k, 3)
    scales2: np.ndarray  #: (k, 2, 2) linear maps from N(0, I) to each cluster's shape
    scales3: np.ndarray  #: (k, 3) per-axis standard deviations in 3-D
    cluster_label: np.ndarray  #: (k,) majority label of each cluster
    drift: np.ndarray  #: (k,) bool: cluster over-represented in prod
    extent: float  #: half-width of the box holding cluster centres and background
    background: float = 0.02  #: fraction of uniform background points
    label_noise: float = 0.05  #: fraction of clustered points given a random label
    outliers: int = 12  #: lone far-away points (in partition 0)

    def sprite_family(self, cluster: np.ndarray) -> np.ndarray:
        """Family (shape/colour group) of the sprites shown for points of ``cluster``."""
        return np.asarray(cluster) % min(self.clusters, self.sprites)


def make_spec(*, clusters: int, labels: int, sprites: int, seed: int) -> SynthSpec:
    """Draw the cluster sizes, shapes, positions, labels and drift from ``seed``.

    Cluster weights follow a heavy-tailed (log-normal) law, so a few clusters hold most points
    and some hold very few; spreads vary ~30x; some clusters are elongated and rotated.
    """
    if clusters < 1 or labels < 1 or sprites < 1:
        raise ValueError("clusters, labels and sprites must all be >= 1")
    rng = np.random.default_rng([seed, 0])
    weights = rng.lognormal(0.0, 1.3, clusters)
    weights /= weights.sum()
    extent = 10.0 * np.sqrt(clusters)
    centers2 = rng.uniform(-0.8 * extent, 0.8 * extent, (clusters, 2))
    centers3 = rng.uniform(-0.8 * extent, 0.8 * extent, (clusters, 3))
    spread = np.exp(rng.uniform(np.log(0.3), np.log(9.0), clusters))
    aspect = rng.uniform(1.0, 4.0, clusters)
    angle = rng.uniform(0, np.pi, clusters)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (k, 2, 2)
    diag = np.stack([spread * np.sqrt(aspect), spread / np.sqrt(aspect)], -1)
    scales2 = rot * diag[:, None, :]
    scales3 = spread[:, None] * rng.uniform(0.5, 1.5, (clusters, 3))
    cluster_label = np.arange(clusters) % labels
    rng.shuffle(cluster_label)
    drift = np.zeros(clusters, bool)
    drift[rng.choice(clusters, size=max(1, clusters // 10), replace=False)] = True
    return SynthSpec(
        seed=seed,
        clusters=clusters,
        labels=labels,
        sprites=sprites,
        weights=weights,
        centers2=centers2,
        centers3=centers3,
        scales2=scales2,
        scales3=scales3,
        cluster_label=cluster_label,
        drift=drift,
        extent=extent,
    )


def generate_part(spec: SynthSpec, index: int, start: int, rows: int) -> dict[str, Any]:
    """Generate rows ``start .. start + rows`` (partition ``index``) with their own seed.

    Returns numpy arrays: ``id`` int64, ``cluster`` int32 (-1 background, -2 outlier),
    ``label`` int16, ``split`` int8 (index into :data:`SPLITS`), ``xy`` float32 (n, 2),
    ``xyz`` float32 (n, 3), ``thumb_id`` int64, ``width``/``height`` int32, ``score`` and
    ``confidence`` float32, ``source`` int8 (index into :data:`SOURCES`).
    """
    rng = np.random.default_rng([spec.seed, 1, index])
    n = rows
    k = spec.clusters
    cluster = rng.choice(k, size=n, p=spec.weights).astype(np.int32)
    cluster[rng.random(n) < spec.background] = -1
    n_out = min(spec.outliers, n) if index == 0 else 0
    cluster[:n_out] = -2
    inside = cluster >= 0
    ci = np.where(inside, cluster, 0)

    z = rng.standard_normal((n, 2), dtype=np.float32)
    A = spec.scales2.astype(np.float32)[ci]
    xy = spec.centers2.astype(np.float32)[ci] + np.einsum("nij,nj->ni", A, z)
    xyz = spec.centers3.astype(np.float32)[ci] + spec.scales3.astype(np.float32)[
        ci
    ] * rng.standard_normal((n, 3), dtype=np.float32)
    r2 = (z * z).sum(1)
    bg = cluster == -1
    nb = int(bg.sum())
    xy[bg] = rng.uniform(-spec.extent, spec.extent, (nb, 2))
    xyz[bg] = rng.uniform(-spec.extent, spec.extent, (nb, 3))
    if n_out:
        orng = np.random.default_rng([spec.seed, 2])
        ang = orng.uniform(0, 2 * np.pi, n_out)
        rad = spec.extent * orng.uniform(1.5, 2.5, n_out)
        xy[:n_out] = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
        d3 = orng.standard_normal((n_out, 3))
        xyz[:n_out] = d3 / np.linalg.norm(d3, axis=1, keepdims=True) * rad[:, None]

    label = np.where(inside, spec.cluster_label[ci], rng.integers(0, spec.labels, n))
    noisy = inside & (rng.random(n) < spec.label_noise)
    label[noisy] = rng.integers(0, spec.labels, int(noisy.sum()))

    # Split by inverse CDF: drift clusters use a prod-heavy distribution.
    u = rng.random(n)
    cdf = np.where((inside & spec.drift[ci])[:, None], np.cumsum(_DRIFT_P), np.cumsum(_SPLIT_P))
    split = (u[:, None] > cdf[:, :2]).sum(1).astype(np.int8)

    families = min(spec.clusters, spec.sprites)
    per_family = -(-spec.sprites // families)
    fam = spec.sprite_family(ci)
    member = rng.integers(0, per_family, n)
    thumb = fam + families * member
    thumb = np.where(thumb < spec.sprites, thumb, fam)
    thumb = np.where(inside, thumb, rng.integers(0, spec.sprites, n)).astype(np.int64)

    size = _SIZES[rng.integers(0, len(_SIZES), n)]
    confidence = np.where(inside, np.exp(-0.5 * r2 / 4.0), rng.uniform(0.05, 0.4, n))
    confidence = np.clip(confidence - noisy * 0.4, 0.0, 1.0).astype(np.float32)
    score = rng.beta(2.0, 5.0, n).astype(np.float32)
    source_p = np.where(split == 2, 0, 1)  # prod comes mostly from the cameras
    source = np.where(
        source_p == 0,
        rng.choice(2, size=n),
        rng.choice(len(SOURCES), size=n, p=[0.3, 0.2, 0.4, 0.1]),
    ).astype(np.int8)
    return {
        "id": np.arange(start, start + n, dtype=np.int64),
        "cluster": cluster,
        "label": label.astype(np.int16),
        "split": split,
        "xy": np.ascontiguousarray(xy, dtype=np.float32),
        "xyz": np.ascontiguousarray(xyz, dtype=np.float32),
        "thumb_id": thumb,
        "width": size[:, 0].astype(np.int32),
        "height": size[:, 1].astype(np.int32),
        "score": score,
        "confidence": confidence,
        "source": source,
    }


_SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "star", "hexagon")


def draw_sprite(sprite_id: int, *, families: int, size: int = 64, quality: int = 80) -> bytes:
    """A small WebP image for ``sprite_id``: shape and hue from its family, details from the id.

    Sprites of one family (``sprite_id % families``) share a shape and a colour, so points of one
    cluster look alike in a thumbnail grid while differing in size, rotation and accents.
    """
    import colorsys
    import math

    from PIL import Image, ImageDraw

    fam = sprite_id % families
    rng = np.random.default_rng([sprite_id, 7])
    hue = (fam * 0.618034) % 1.0
    fg = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.75, 0.9))
    bg = tuple(int(255 * v) for v in colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.12, 0.97))
    accent = tuple(int(255 * v) for v in colorsys.hsv_to_rgb((hue + 0.3) % 1.0, 0.6, 0.5))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    cx, cy = size / 2 + rng.uniform(-6, 6), size / 2 + rng.uniform(-6, 6)
    r = size * rng.uniform(0.22, 0.36)
    rot = rng.uniform(0, 2 * math.pi)
    shape = _SHAPES[fam % len(_SHAPES)]

    def poly(n: int, radius: float, phase: float = 0.0) -> list[tuple[float, float]]:
        return [
            (
                cx + radius * math.cos(rot + phase + 2 * math.pi * i / n),
                cy + radius * math.sin(rot + phase + 2 * math.pi * i / n),
            )
            for i in range(n)
        ]

    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=fg)
    elif shape == "ring":
        d.ellipse(box, outline=fg, width=max(3, int(r / 3)))
    elif shape == "square":
        d.polygon(poly(4, r * 1.2, math.pi / 4), fill=fg)
    elif shape == "diamond":
        d.polygon(poly(4, r * 1.2), fill=fg)
    elif shape == "triangle":
        d.polygon(poly(3, r * 1.2), fill=fg)
    elif shape == "hexagon":
        d.polygon(poly(6, r), fill=fg)
    elif shape == "star":
        pts = []
        for i in range(10):
            rad = r * (1.2 if i % 2 == 0 else 0.5)
            a = rot + math.pi * i / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        d.polygon(pts, fill=fg)
    else:  # cross
        w = r / 2.5
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fg)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fg)
    for _ in range(int(rng.integers(1, 4))):  # per-sprite accents
        ax, ay = rng.uniform(4, size - 4, 2)
        ar = rng.uniform(2, 5)
        d.ellipse((ax - ar, ay - ar, ax + ar, ay + ar), fill=accent)
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=quality)
    return buf.getvalue()
