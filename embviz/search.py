"""Similarity search in one embedding table: from samples, a vector, an uploaded image or text."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import Dataset, open_dataset
from .errors import DatasetError, EmbvizError, ModelError

__all__ = ["MAX_IN_MEMORY_VALUES", "SearchResult", "Searcher", "searcher"]

#: Without a saved index (``embviz index``), a table of at most this many float32 values (800 MB)
#: is read into an exact in-memory index; a larger one must be indexed first.
MAX_IN_MEMORY_VALUES = 200_000_000

#: Uploads whose header claims more pixels are refused before decoding (open_image's default).
_MAX_PIXELS = 100_000_000

#: Sample ids reconstructed per step when averaging a selection (bounds the memory it takes).
_CENTROID_CHUNK = 65_536


@dataclass(frozen=True)
class SearchResult:
    """The nearest samples to a query, nearest first.

    Attributes
    ----------
    ids:
        int64 sample ids.
    distances:
        float32 cosine distances (``1 - cosine similarity``: 0 is the same direction, 2 the
        opposite), ascending.
    query:
        What was searched for, for a title: ``similar to sample 42``, ``similar to 3
        selected``, ``similar to uploaded image 'cat.jpg'``, ``text: 'a cat'``.
    """

    ids: np.ndarray
    distances: np.ndarray
    query: str

    def __len__(self) -> int:
        return len(self.ids)


_SEARCHERS: dict[tuple[str, str, str], Searcher] = {}
_SEARCHERS_LOCK = threading.Lock()


def searcher(ds: Dataset | str | os.PathLike, embedding: str, *, device: str = "auto") -> Searcher:
    """The process-wide :class:`Searcher` of ``embedding`` in ``ds`` (thread-safe).

    One per embedding table version: after a re-embed (a new version in ``ds``'s manifest) the
    next call makes a new one and forgets the old.

    Parameters
    ----------
    ds:
        An open dataset or its folder.
    embedding:
        Embedding table name, ``<model>.<layer>`` (with or without ``embeddings/``).
    device:
        Where uploads and texts are embedded: ``auto`` (CUDA when available), ``cpu`` ...
    """
    ds = ds if isinstance(ds, Dataset) else open_dataset(ds, check_files=False)
    name = embedding.removeprefix("embeddings/")
    if not ds.has(f"embeddings/{name}"):
        raise DatasetError(
            f"{ds.root}: no embedding table {name!r}; embeddings: {ds.embeddings or 'none'}"
        )
    root = str(Path(ds.root).resolve())
    key = (root, ds.table(f"embeddings/{name}")["dir"], device)
    with _SEARCHERS_LOCK:
        found = _SEARCHERS.get(key)
        if found is None:
            stale = [
                k
                for k, s in _SEARCHERS.items()
                if k[0] == root and s.embedding == name and k[1] != key[1]
            ]
            for old in stale:  # older versions of this table: their files are gone
                del _SEARCHERS[old]
            found = _SEARCHERS[key] = Searcher(ds, name, device=device)
        return found


class Searcher:
    """Nearest neighbours in one embedding table by cosine distance; get one with :func:`searcher`.

    Uses the saved faiss index when ``embviz index`` ran for this table version (any size, no
    vectors in memory), else reads the vectors once into an exact in-memory index. Uploads and
    texts are embedded with the model, layer, reshape and image size the table records, so they
    land in the same space as the dataset's own images.

    Every method raises an :class:`~embviz.errors.EmbvizError` subclass for what the user can
    fix: :class:`~embviz.images.ImageError` (an upload that does not decode),
    :class:`~embviz.errors.ModelError` (no model to embed with, no text tower),
    :class:`~embviz.errors.DatasetError` (unknown sample ids, a table too large to search
    without an index).
    """

    def __init__(self, ds: Dataset, embedding: str, *, device: str = "auto"):
        self.ds = ds
        self.embedding = embedding.removeprefix("embeddings/")
        self.key = f"embeddings/{self.embedding}"
        self.meta: dict[str, Any] = dict(ds.meta(self.key))
        self.device = device
        self._lock = threading.Lock()
        self._index = None
        self._saved = False
        self._sorted: tuple[Any, np.ndarray, np.ndarray] | None = None
        self._embedder = None
        self._text = None
        self._supports_text: bool | None = None

    def __repr__(self) -> str:
        return f"Searcher({self.ds.name!r}, {self.embedding!r})"

    @property
    def model(self) -> str | None:
        """The model that made the table (None for vectors ingested from a file)."""
        return self.meta.get("model") if "weights_sha256" in self.meta else None

    @property
    def layer(self) -> str | None:
        """The model layer the table holds (``pooled``, ``blocks.5`` ...)."""
        return self.meta.get("layer")

    # -- the index ---------------------------------------------------------------------------
    @property
    def index(self):
        """The :class:`~embviz.index.NeighbourIndex` searched (loaded or built on first use).

        An exact in-memory index gives way to the saved one as soon as ``embviz index`` has
        written it (a file check per query), so its vectors are not held twice.
        """
        if self._stale():
            with self._lock:
                if self._stale():
                    self._index = self._load_index()
                    self._sorted = None
        return self._index

    def _stale(self) -> bool:
        from .index import index_dir

        if self._index is None:
            return True
        return not self._saved and (index_dir(self.ds, self.embedding) / "index.faiss").exists()

    @property
    def saved(self) -> bool:
        """Whether the searched index is the one ``embviz index`` saved (else exact, in memory)."""
        self.index  # noqa: B018 - loads it
        return self._saved

    def warm(self) -> Searcher:
        """Load the index and, when the table records a model, the model (one blank forward
        pass), so the first search does not pay for them: call it from a background thread
        when a dataset opens. The first model load imports torch (seconds)."""
        self.index  # noqa: B018 - loads it
        if self.model is not None:
            emb = self.embedder()
            emb.embed_batch(emb.dummy_batch(1), [self.layer], self.meta.get("reshape") or "mean")
        return self

    def _load_index(self):
        from .index import NeighbourIndex, load_for

        saved = load_for(self.ds, self.embedding)
        self._saved = saved is not None and saved.metric == "cosine"
        if self._saved:
            return saved
        entry = self.ds.table(self.key)
        dim = int(self.meta.get("dim") or 0)
        if dim and entry["rows"] * dim > MAX_IN_MEMORY_VALUES:
            raise DatasetError(
                f"{self.ds.root}: embedding {self.embedding!r} has {entry['rows']:,} x {dim} "
                "values, too many to search in memory; build its index first: "
                f"embviz index {self.ds.root} --embedding {self.embedding}"
            )
        ids, vectors = self.ds.read_vectors(self.key)
        return NeighbourIndex.build(ids, vectors, metric="cosine", kind="flat")

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Index rows of sample ``ids``; DatasetError naming the first id the table lacks."""
        index = self.index
        if self._sorted is None or self._sorted[0] is not index:  # built for this index
            order = np.argsort(index.ids, kind="stable")
            self._sorted = (index, index.ids[order], order)
        _, sorted_ids, order = self._sorted
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        found = sorted_ids[pos] == ids if len(sorted_ids) else np.zeros(len(ids), bool)
        if not found.all():
            missing = int(ids[np.argmin(found)])
            raise DatasetError(
                f"sample id {missing} has no vector in embedding {self.embedding!r} of "
                f"{self.ds.root} (an unknown id, or its image did not embed)"
            )
        return order[pos]

    # -- queries -----------------------------------------------------------------------------
    def by_ids(self, ids: Sequence[int] | np.ndarray | int, k: int = 50) -> SearchResult:
        """The ``k`` samples nearest the centroid of samples ``ids``, leaving ``ids`` out.

        One id is "similar to this point"; several (a selection) average their unit vectors,
        so every sample weighs the same whatever its norm.
        """
        ids = np.unique(np.atleast_1d(np.asarray(ids, dtype=np.int64)))
        if ids.size == 0:
            raise DatasetError("no sample ids to search from; select some points first")
        rows = self._rows(ids)
        total = np.zeros(self.index.index.d, np.float64)
        for start in range(0, len(rows), _CENTROID_CHUNK):
            chunk = self.index.index.reconstruct_batch(rows[start : start + _CENTROID_CHUNK])
            total += np.asarray(chunk, np.float64).sum(axis=0)
        query = (
            f"similar to sample {ids[0]}" if ids.size == 1 else f"similar to {ids.size} selected"
        )
        return self.by_vector(total / ids.size, k, exclude=ids, query=query)

    def by_vector(
        self,
        vector: np.ndarray,
        k: int = 50,
        *,
        exclude: Sequence[int] | np.ndarray = (),
        query: str = "similar to a vector",
    ) -> SearchResult:
        """The ``k`` samples nearest ``vector`` (length = the embedding's dim).

        ``exclude`` are sample ids left out of the result; ``query`` becomes the result's
        description.
        """
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vector = np.asarray(vector, np.float32).reshape(1, -1)
        if not np.isfinite(vector).all():
            raise ModelError(f"{query}: the query vector has NaN or infinite values")
        index = self.index
        exclude = np.asarray(exclude, np.int64)
        n = len(index)
        # Ask for a few more than k to make room for the left-out ids; rarely needs a retry.
        want = min(n, k + min(exclude.size, 4 * k))
        while True:
            got, dist = index.query(vector, max(want, 1))
            keep = (got[0] >= 0) & ~np.isin(got[0], exclude)
            if keep.sum() >= k or want >= n:
                break
            want = min(n, want * 4)
        ids, dist = got[0][keep][:k], dist[0][keep][:k]
        return SearchResult(ids.astype(np.int64), dist.astype(np.float32), query)

    # -- images ------------------------------------------------------------------------------
    def embedder(self):
        """The dataset's model as an :class:`~embviz.models.base.Embedder`, loaded once per
        process; ModelError when the table was not made by ``embviz embed`` or the model now
        loads different weights."""
        if self._embedder is not None:
            return self._embedder
        from .models import cached_embedder

        if self.model is None:
            raise ModelError(
                f"embedding {self.embedding!r} of {self.ds.root} holds vectors ingested from "
                f"{self.meta.get('source') or 'a file'}, with no model to embed new images or "
                "text; search by image needs an embedding made by 'embviz embed'"
            )
        image_size = self.meta.get("image_size")
        emb = cached_embedder(
            self.model, image_size=int(image_size) if image_size else None, device=self.device
        )
        recorded = self.meta.get("weights_sha256")
        if recorded and emb.weights_sha256 != recorded:
            raise ModelError(
                f"model {self.model!r} now loads different weights (sha256 "
                f"{emb.weights_sha256[:12]}) than embedding {self.embedding!r} was made with "
                f"({recorded[:12]}); its vectors would not be comparable: re-embed the dataset "
                "or install the model version it used"
            )
        self._embedder = emb
        return emb

    def embed_image(self, data: bytes | str | os.PathLike, *, name: str | None = None):
        """The embedding of one image (file path or the bytes of an upload named ``name``), made
        exactly as ``embviz embed`` made the table's: float32 ndarray (dim,)."""
        from .reshape import reshape_names, resolve_reshape

        reshape = self.meta.get("reshape") or "mean"
        try:
            resolve_reshape(reshape)
        except ModelError:  # a callable, recorded by its import path
            raise ModelError(
                f"embedding {self.embedding!r} was made with the custom reshape {reshape!r}; "
                f"image search can rebuild only the built-in ones ({reshape_names()})"
            ) from None
        emb = self.embedder()
        image = _decode(data, name)
        source = name or ("uploaded image" if _is_bytes(data) else os.fspath(data))
        out = emb.embed_images([image], [self.layer], reshape, sources=[source])
        return out[self.layer][0]

    def by_image(
        self, data: bytes | str | os.PathLike, k: int = 50, *, name: str | None = None
    ) -> SearchResult:
        """The ``k`` samples nearest an image: a file path, or the bytes of an upload.

        ``name`` (an upload's file name) appears in errors and in the result's description.
        Decoding is :mod:`embviz.images`'s (EXIF orientation, modes, decompression bombs
        refused); bytes that are not an image raise :class:`~embviz.images.ImageError`.
        """
        vector = self.embed_image(data, name=name)
        if _is_bytes(data):
            query = f"similar to uploaded image {name!r}" if name else "similar to uploaded image"
        else:
            query = f"similar to image {Path(os.fspath(data)).name!r}"
        return self.by_vector(vector, k, query=query)

    # -- text --------------------------------------------------------------------------------
    @property
    def supports_text(self) -> bool:
        """Whether :meth:`by_text` works: the table is the ``pooled`` layer of a CLIP-like model
        (reads the model's configuration once, not its weights)."""
        if self._supports_text is None:
            from .models import has_text_encoder
            from .models.base import POOLED

            self._supports_text = bool(
                self.model and self.layer == POOLED and has_text_encoder(self.model)
            )
        return self._supports_text

    def embed_text(self, text: str):
        """The text tower's vector for ``text``: float32 ndarray (dim,)."""
        if not self.supports_text:
            raise ModelError(
                "text search needs a CLIP-like model's pooled embedding (a Hugging Face model "
                "with a text tower, e.g. hf:openai/clip-vit-base-patch32, layer 'pooled'); "
                f"embedding {self.embedding!r} of dataset {self.ds.name!r} is model "
                f"{self.meta.get('model')!r}, layer {self.layer!r}"
            )
        if self._text is None:
            from .models import get_text_encoder

            emb = self.embedder()
            encoder = get_text_encoder(self.model, device=self.device, embedder=emb)
            with self._lock:
                self._text = self._text or encoder
        return self._text([text])[0]

    def by_text(self, text: str, k: int = 50) -> SearchResult:
        """The ``k`` samples whose images best match ``text`` (CLIP-like models only: see
        :attr:`supports_text`; otherwise a ModelError naming the dataset's model)."""
        text = (text or "").strip()
        if not text:
            raise EmbvizError("text search needs some text to search for")
        return self.by_vector(self.embed_text(text), k, query=f"text: {text!r}")


def _is_bytes(data: Any) -> bool:
    return isinstance(data, bytes | bytearray | memoryview)


def _decode(data: bytes | str | os.PathLike, name: str | None):
    """An RGB image from a file path or an upload's bytes, through :mod:`embviz.images`."""
    from .images import ImageError, decode_image, open_image

    if _is_bytes(data):
        label = name or "uploaded image"
        data = bytes(data)
        if not data:
            raise ImageError(label, "empty upload", "0 bytes")
        return decode_image(data, label, max_pixels=_MAX_PIXELS)
    if isinstance(data, str | os.PathLike):
        return open_image(data)
    raise TypeError(f"expected image bytes or a file path, got {type(data).__name__}")
