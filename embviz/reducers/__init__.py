"""Registry of dimensionality reducers (PCA, UMAP, t-SNE, PaCMAP) behind one fit/transform API.

Every reducer fits on a (sample of the) high-dimensional vectors and then places any number of
further vectors into the fitted space with :meth:`Reducer.transform`, so millions of points can
be projected partition by partition, on a Dask cluster if need be. Reducers are picklable and
seeded: the same seed and data give the same coordinates. Heavy libraries (umap, openTSNE,
pacmap, faiss) are imported inside the methods that need them, never at import time.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError

__all__ = [
    "REDUCERS",
    "NeighbourIndex",
    "Reducer",
    "available_reducers",
    "get_reducer",
    "knn_interpolate",
]

#: Reducer name -> "module:Class"; imported on demand so `import embviz.reducers` stays cheap.
REDUCERS: dict[str, str] = {
    "pca": "embviz.reducers.pca:PCAReducer",
    "umap": "embviz.reducers.umap_:UMAPReducer",
    "tsne": "embviz.reducers.tsne:TSNEReducer",
    "pacmap": "embviz.reducers.pacmap_:PaCMAPReducer",
}


def available_reducers() -> list[str]:
    """Names accepted by :func:`get_reducer`."""
    return sorted(REDUCERS)


def get_reducer(method: str, *, dims: int, seed: int = 0, **params: Any) -> Reducer:
    """A new, unfitted reducer.

    Parameters
    ----------
    method : one of :func:`available_reducers` (``pca``, ``umap``, ``tsne``, ``pacmap``).
    dims : output dimensions, 2 or 3.
    seed : random seed; the same seed and input give the same output.
    **params : method parameters (see each reducer class's ``PARAMS``) plus the shared ``pca``
        pre-reduction (an int: keep that many principal components; a float in (0, 1): keep the
        components explaining that fraction of the variance; None: no pre-reduction).

    Raises
    ------
    ConfigError naming the unknown method or parameter and listing the valid ones.
    """
    if method not in REDUCERS:
        raise ConfigError(
            f"unknown reduction method {method!r}; valid methods: {available_reducers()}"
        )
    module, _, cls_name = REDUCERS[method].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    return cls(dims=dims, seed=seed, **params)


def _check_pca(pca: Any) -> int | float | None:
    if pca is None:
        return None
    if isinstance(pca, bool) or not isinstance(pca, int | float):
        raise ConfigError(
            f"parameter 'pca' must be an int >= 1, a float in (0, 1) or None, got {pca!r}"
        )
    if isinstance(pca, float) and not 0 < pca < 1:
        if pca.is_integer() and pca >= 1:
            return int(pca)
        raise ConfigError(f"parameter 'pca' as a fraction must be in (0, 1), got {pca}")
    if isinstance(pca, int) and pca < 1:
        raise ConfigError(f"parameter 'pca' as a component count must be >= 1, got {pca}")
    return pca


class Reducer:
    """Base class: parameter checking, optional PCA pre-reduction, fit/transform bookkeeping.

    Subclasses set ``name`` and ``PARAMS`` (name -> default; the class docstring explains each)
    and implement ``_fit(X) -> (n, dims)`` and ``_transform(X) -> (n, dims)`` on pre-reduced
    float32 input. After :meth:`fit`, ``embedding_`` holds the fitted sample's coordinates.
    """

    name: ClassVar[str] = ""
    PARAMS: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, dims: int = 2, seed: int = 0, pca: int | float | None = None, **params):
        if dims not in (2, 3):
            raise ConfigError(f"parameter 'dims' must be 2 or 3, got {dims!r}")
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise ConfigError(
                f"unknown parameter {unknown[0]!r} for reducer {self.name!r}; "
                f"valid parameters: {sorted([*self.PARAMS, 'pca'])}"
            )
        self.dims = int(dims)
        self.seed = int(seed)
        self.pca = _check_pca(pca)
        self.options: dict[str, Any] = {**self.PARAMS, **params}
        self._check_options()
        self._pre = None
        self.embedding_: np.ndarray | None = None
        self.pca_components_: int | None = None

    def _check_options(self) -> None:
        """Validate ``self.options``; subclasses raise :class:`ConfigError` naming the parameter."""

    @property
    def params(self) -> dict[str, Any]:
        """Everything needed to reproduce the fit, for the manifest."""
        out = {"method": self.name, "dims": self.dims, "seed": self.seed, "pca": self.pca}
        out.update(self.options)
        if self.pca_components_ is not None:
            out["pca_components"] = self.pca_components_
        return out

    # -- pre-reduction -------------------------------------------------------------------------
    def _prereduce_fit(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.pca is None:
            return X
        from sklearn.decomposition import PCA

        n_comp = self.pca
        if isinstance(n_comp, int):
            n_comp = min(n_comp, X.shape[0], X.shape[1])
        # 'full' is exact and deterministic; with a variance fraction sklearn needs it anyway.
        solver = "full" if isinstance(n_comp, float) or min(X.shape) <= 500 else "randomized"
        self._pre = PCA(n_components=n_comp, svd_solver=solver, random_state=self.seed).fit(X)
        self.pca_components_ = int(self._pre.n_components_)
        return self._pre.transform(X).astype(np.float32)

    def _prereduce(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        return X if self._pre is None else self._pre.transform(X).astype(np.float32)

    # -- public API ------------------------------------------------------------------------------
    def fit(self, X: np.ndarray) -> Reducer:
        """Fit on ``X`` (n, d); return self. ``embedding_`` then holds X's coordinates."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(f"{self.name}: need a 2-D array with at least 2 rows, got {X.shape}")
        Z = self._prereduce_fit(X)
        self.embedding_ = np.ascontiguousarray(self._fit(Z), dtype=np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Coordinates (float32, (n, dims)) of new vectors ``X`` in the fitted space."""
        if self.embedding_ is None:
            raise ValueError(f"{self.name}: call fit() before transform()")
        X = np.asarray(X)
        if X.shape[0] == 0:
            return np.zeros((0, self.dims), dtype=np.float32)
        return np.ascontiguousarray(self._transform(self._prereduce(X)), dtype=np.float32)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """Fit on ``X`` and return its coordinates (float32, (n, dims))."""
        return self.fit(X).embedding_

    # -- to implement ----------------------------------------------------------------------------
    def _fit(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


#: Fitted samples up to this size are searched exactly (faiss flat); larger ones through an
#: approximate pynndescent graph (exact search of 1M queries against 100K points takes ~10 min
#: on 2 cores; pynndescent ~1.5 min at ~0.8 recall, plenty for interpolating coordinates).
EXACT_SEARCH_MAX = 20_000


class NeighbourIndex:
    """k-nearest-neighbour search over the fitted sample: exact when small, pynndescent when large.

    Pickles for Dask workers: a flat index is rebuilt lazily (a copy), a pynndescent index
    travels prepared. ``graph`` reuses an index already built during the fit (UMAP's own).
    """

    def __init__(self, data: np.ndarray, *, seed: int = 0, metric: str = "euclidean", graph=None):
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.seed = seed
        self.metric = metric
        self._flat = None
        self._graph = graph
        self.exact = graph is None and self.data.shape[0] <= EXACT_SEARCH_MAX

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_flat"] = None
        return state

    def search(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, indices)``, each (n, k), nearest first."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.metric == "cosine":  # cosine distance ranks like euclidean on unit vectors
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        if self.exact:
            if self._flat is None:
                import faiss

                data = self.data
                if self.metric == "cosine":
                    data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
                self._flat = faiss.IndexFlatL2(data.shape[1])
                self._flat.add(np.ascontiguousarray(data, dtype=np.float32))
            d2, idx = self._flat.search(X, k)
            return np.sqrt(np.maximum(d2, 0)), idx
        if self._graph is None:
            from pynndescent import NNDescent

            self._graph = NNDescent(
                self.data, metric=self.metric, n_neighbors=30, random_state=self.seed, n_jobs=1
            )
            self._graph.prepare()
        idx, dist = self._graph.query(X, k=k)
        return dist, idx


class KNNTransformMixin:
    """Out-of-sample placement by interpolating the fitted coordinates of the k nearest neighbours.

    Non-linear methods re-optimise new points (UMAP: ~50 min per million here) or cannot
    transform at all. Instead a new point goes to the distance-weighted mean of the fitted
    coordinates of its ``transform_neighbors`` nearest fitted points, which is how UMAP
    initialises its own transform. Subclasses set ``self._index`` (a :class:`NeighbourIndex`).
    """

    _index: NeighbourIndex | None = None

    def _knn_transform(self, X: np.ndarray, k: int) -> np.ndarray:
        return knn_interpolate(self._index, self.embedding_, X, k=k)


def knn_interpolate(index, fitted: np.ndarray, X: np.ndarray, *, k: int = 10) -> np.ndarray:
    """Place ``X`` at the weighted mean of the ``fitted`` coordinates of its k nearest neighbours.

    Parameters
    ----------
    index : a :class:`NeighbourIndex` over the fitted (pre-reduced) vectors, row i <-> ``fitted[i]``.
    fitted : (m, dims) coordinates of the fitted vectors.
    X : (n, d) new vectors in the same space as the index.
    k : neighbours to average; weights fall off as exp(-(d - d_min) / mean(d - d_min)), so the
        nearest neighbours dominate and a duplicate of a fitted point lands close to it.

    Returns (n, dims) float32.
    """
    k = max(1, min(int(k), fitted.shape[0]))
    X = np.ascontiguousarray(X, dtype=np.float32)
    out = np.empty((X.shape[0], fitted.shape[1]), dtype=np.float32)
    step = 65_536  # bounds the temporary (step, m) distance block
    for s in range(0, X.shape[0], step):
        d, idx = index.search(X[s : s + step], k)
        d = np.asarray(d, dtype=np.float64)
        rel = d - d[:, :1]
        scale = rel.mean(axis=1, keepdims=True)
        scale[scale <= 0] = 1.0
        w = np.exp(-rel / scale)
        w /= w.sum(axis=1, keepdims=True)
        out[s : s + step] = np.einsum("nk,nkd->nd", w, fitted[idx]).astype(np.float32)
    return out
