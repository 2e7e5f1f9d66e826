"""Why the model predicted what it did for one sample: its saliency map, computed once and cached.

An :class:`Explainer` belongs to a dataset with a ``predictions`` table (one per process, shared
by every session). It explains the same classifier that made the predictions: for the ``probe``
source the embedding's model up to the embedded layer plus the probe, as one torch module
(:func:`embviz.saliency.probe_module`; the probe is refitted on every label, as the step's
model for unlabelled rows is); for ``head`` the model's own classifier. Maps are PNGs cached
beside the dataset (``cache/saliency/``, derived data, safe to delete) by sample, model, layer,
method and class.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embviz.dataset import Dataset
from embviz.errors import DatasetError

__all__ = ["Explained", "Explainer", "explainer_for"]

_EXPLAINERS: dict[str, Explainer] = {}
_GUARD = threading.Lock()


@dataclass(frozen=True)
class Explained:
    """One saliency map, ready to lay over the sample's image."""

    png: bytes  #: the map in colour (same aspect as the image), to show over it
    method: str
    layer: str
    label: str  #: the class explained
    score: float  #: its probability
    cached: bool


def explainer_for(ds: Dataset) -> Explainer:
    """The process-wide :class:`Explainer` of ``ds`` (its predictions' version)."""
    key = f"{ds.root}|{ds.table('predictions')['dir']}"
    with _GUARD:
        if key not in _EXPLAINERS:
            _EXPLAINERS[key] = Explainer(ds)
        return _EXPLAINERS[key]


class Explainer:
    """Saliency maps of a dataset's classifier (see the module docstring)."""

    def __init__(self, ds: Dataset):
        if not ds.has("predictions"):
            raise DatasetError(f"{ds.root}: no predictions; run 'embviz predict' first")
        self.ds = ds
        self.meta = ds.meta("predictions")
        self.source = self.meta.get("source", "probe")
        self.classes: list[str] = [str(c) for c in self.meta.get("classes", [])]
        if self.source == "probe":
            emb = self.meta["embedding"]
            emb_meta = ds.meta(emb)
            self.model = str(emb_meta["model"])
            self.layer = str(emb_meta["layer"])
            self.reshape = emb_meta.get("reshape", "mean")
            self.image_size = emb_meta.get("image_size")
            self._embedding = emb
        else:
            self.model = str(self.meta["model"])
            self.layer = None
            self.reshape = None
            self.image_size = self.meta.get("result", {}).get("image_size")
        self._head = None
        self._lock = threading.Lock()

    def _embedder(self):
        from embviz.models import cached_embedder

        return cached_embedder(self.model, image_size=self.image_size, device="auto")

    def _probe_head(self):
        """The probe as a torch module on the backbone (refitted once per process)."""
        with self._lock:
            if self._head is None:
                from embviz.saliency import probe_linear, probe_module
                from embviz.scores.probe import fit_probe

                samples = self.ds.read_arrow("samples", columns=["id", "label"])
                labels = samples.column("label").cast("string").to_pylist()
                code = {c: i for i, c in enumerate(self.classes)}
                codes = np.array([code.get(v, -1) for v in labels], dtype=np.int64)
                vid, vecs = self.ds.read_vectors(self._embedding)
                where = {int(v): i for i, v in enumerate(vid)}
                rows = np.array([where.get(int(i), -1) for i in samples.column("id").to_numpy()])
                keep = rows >= 0
                model, classes = fit_probe(
                    vecs[rows[keep]], codes[keep], folds=int(self.meta.get("folds", 5))
                )
                if len(classes) != len(self.classes):
                    raise DatasetError(
                        f"{self.ds.root}: the probe refitted on {len(classes)} classes, the "
                        f"predictions have {len(self.classes)}; run 'embviz predict' again"
                    )
                self._head = probe_module(
                    self._embedder(), self.layer, self.reshape, probe_linear(model)
                )
            return self._head

    def explain(self, sample_id: int, *, method: str = "gradcam", label: str | None = None):
        """The map of ``sample_id`` for class ``label`` (None: the top prediction).

        Raises :class:`DatasetError` for a class the classifier does not have or a sample
        whose image is gone, :class:`~embviz.errors.ModelError` for what the model cannot do.
        """
        from embviz.images import open_image
        from embviz.saliency import overlay, saliency

        if label is not None and label not in self.classes:
            raise DatasetError(f"the classifier has no class {label!r}")
        target = self.classes.index(label) if label is not None else None
        path = self._cache_path(sample_id, method, label)
        cached = self.cached(sample_id, method=method, label=label)
        if cached is not None:
            return cached
        uri = self.ds.read_ids("samples", [int(sample_id)], ["uri"])
        if not uri.num_rows:
            raise DatasetError(f"{self.ds.root}: no sample {sample_id}")
        image_path = Path(str(uri.column("uri")[0].as_py()))
        if not image_path.is_absolute():
            image_path = self.ds.root / image_path
        try:
            image = open_image(image_path)
        except Exception as exc:
            raise DatasetError(
                f"sample {sample_id}: cannot read its image {image_path} ({exc})"
            ) from None
        head = self._probe_head() if self.source == "probe" else None
        found = saliency(self._embedder(), image, target=target, method=method, head=head)
        colour = overlay(image, found, alpha=1.0, size=_display_size(image.size))
        buf = io.BytesIO()
        colour.save(buf, format="PNG", optimize=True)
        name = self.classes[found.target] if found.target < len(self.classes) else str(found.target)
        result = Explained(buf.getvalue(), method, found.layer, name, found.score, False)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(result.png)
        tmp.replace(path)
        path.with_suffix(".txt").write_text(f"{found.layer}\n{name}\n{found.score!r}\n")
        return result

    def cached(
        self, sample_id: int, *, method: str = "gradcam", label: str | None = None
    ) -> Explained | None:
        """The map :meth:`explain` would return if it is cached already, else None: never
        computes one (a report reads the cache this way, without a model)."""
        path = self._cache_path(sample_id, method, label)
        return self._read_cached(path, method) if path.exists() else None

    def _cache_path(self, sample_id: int, method: str, label: str | None) -> Path:
        key = "|".join(
            map(str, (self.meta.get("fingerprint"), sample_id, self.model, method, label))
        )
        digest = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
        return self.ds.root / "cache" / "saliency" / f"{digest}.png"

    def _read_cached(self, path: Path, method: str) -> Explained | None:
        try:
            layer, name, score = path.with_suffix(".txt").read_text().splitlines()[:3]
            return Explained(path.read_bytes(), method, layer, name, float(score), True)
        except (OSError, ValueError):
            return None  # a torn or partial entry: computed again and replaced


def _display_size(size: tuple[int, int]) -> tuple[int, int]:
    """The map's size: the image's aspect, at most 448 px (a detail panel's width)."""
    w, h = size
    scale = min(1.0, 448 / max(w, h)) if max(w, h) > 448 else 448 / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))
