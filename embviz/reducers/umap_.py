"""UMAP reducer (umap-learn): fits a fuzzy neighbour graph; new points by kNN interpolation."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from . import EXACT_SEARCH_MAX, KNNTransformMixin, NeighbourIndex, Reducer

__all__ = ["UMAPReducer", "fit_aligned"]


class UMAPReducer(KNNTransformMixin, Reducer):
    """Uniform Manifold Approximation and Projection (umap-learn), seeded and single-threaded.

    Parameters
    ----------
    n_neighbors : size of the neighbourhood UMAP looks at. Small values (5-15) preserve fine,
        local structure and may split clusters into fragments; large values (50-200) favour the
        global layout and merge small clusters. Default 15.
    min_dist : how tightly points may pack in the output. Small values (0.0-0.1) give dense,
        well separated clumps (good for seeing clusters); larger values (0.5-0.99) spread points
        out evenly (good for seeing within-cluster variation). Default 0.1.
    metric : distance in the input space: ``euclidean`` or ``cosine`` (often better for
        normalised network features). Default ``euclidean``.
    n_epochs : optimisation epochs for the fit; None lets UMAP choose (200 for large data,
        500 for small). Fewer is faster and rougher.
    transform : how points outside the fitted sample are placed. ``knn`` (default): the
        weighted mean of the fitted coordinates of their ``transform_neighbors`` nearest
        fitted points (exact faiss search for samples up to 20K points, else a pynndescent graph; ~40x faster
        than UMAP's own). ``umap``: UMAP's
        ``transform`` (neighbour search plus a short optimisation; slower, slightly sharper).
    transform_neighbors : neighbours averaged by the ``knn`` transform. Default 10.
    init : starting layout of the optimisation. ``pca`` (default): the top principal
        components, which keep the relative placement of clusters as well as a spectral start
        does and are about twice as fast on small samples. ``spectral``: umap-learn's default.
        When the neighbour graph falls apart into separate components (well separated
        classes), umap-learn sizes each component by half its distance to the nearest other
        one, and round-off sometimes makes a component's distance to itself that minimum: the
        component starts collapsed to a point, and the same seed gives a different map.
        ``random``: uniform, seeded; fastest and roughest.

    A fixed seed makes UMAP run single-threaded: reproducibility over speed.
    :meth:`fit_from` starts the optimisation from given coordinates instead of ``init`` (a
    series of maps, each member starting where the previous one ended).
    """

    name: ClassVar[str] = "umap"
    PARAMS: ClassVar[dict[str, Any]] = {
        "n_neighbors": 15,
        "min_dist": 0.1,
        "metric": "euclidean",
        "n_epochs": None,
        "transform": "knn",
        "transform_neighbors": 10,
        "init": "pca",
    }

    #: Set by :meth:`fit_from` for one fit: start coordinates and learning rate.
    _start: np.ndarray | None = None
    _learning_rate: float = 1.0

    def fit_from(
        self,
        X: np.ndarray,
        start: np.ndarray,
        *,
        learning_rate: float = 1.0,
    ) -> UMAPReducer:
        """Fit on ``X`` with the optimisation starting from ``start`` instead of ``init``.

        Parameters
        ----------
        X : (n, d) vectors.
        start : (n, dims) starting coordinates of X's rows (umap-learn rescales them to a
            10 x 10 box); the layout of the same samples in a neighbouring map of a series.
        learning_rate : umap-learn's initial learning rate. The default 1.0 lets points travel
            far from their start; 0.1 keeps the start's arrangement where the neighbour graph
            allows, and still lets clusters that the graph joins or splits move.

        Returns self; ``embedding_`` holds X's coordinates.
        """
        start = np.asarray(start, dtype=np.float32)
        if start.shape != (np.asarray(X).shape[0], self.dims) or not np.isfinite(start).all():
            raise ValueError(
                f"umap: start must be finite ({np.asarray(X).shape[0]}, {self.dims}) coordinates, "
                f"got shape {start.shape}"
            )
        self._start, self._learning_rate = start, float(learning_rate)
        try:
            return self.fit(X)
        finally:
            self._start, self._learning_rate = None, 1.0

    def _check_options(self) -> None:
        if self.options["transform"] not in ("knn", "umap"):
            raise ConfigError(
                f"umap parameter 'transform' must be 'knn' or 'umap', got {self.options['transform']!r}"
            )
        if self.options["metric"] not in ("euclidean", "cosine"):
            raise ConfigError(
                f"umap parameter 'metric' must be 'euclidean' or 'cosine', got {self.options['metric']!r}"
            )
        if self.options["init"] not in ("pca", "spectral", "random"):
            raise ConfigError(
                "umap parameter 'init' must be 'pca', 'spectral' or 'random', "
                f"got {self.options['init']!r}"
            )

    def _fit(self, X: np.ndarray) -> np.ndarray:
        import umap

        o = self.options
        n_neighbors = max(2, min(int(o["n_neighbors"]), X.shape[0] - 1))
        self._model = umap.UMAP(
            n_components=self.dims,
            n_neighbors=n_neighbors,
            min_dist=float(o["min_dist"]),
            metric=o["metric"],
            n_epochs=o["n_epochs"],
            init=o["init"] if self._start is None else self._start,
            learning_rate=self._learning_rate,
            random_state=self.seed,
            n_jobs=1,
            transform_seed=self.seed,
        )
        Y = self._model.fit_transform(X)
        # UMAP already built a pynndescent search graph over X for large inputs: reuse it.
        graph = getattr(self._model, "_knn_search_index", None)
        self._index = NeighbourIndex(
            X,
            seed=self.seed,
            metric=o["metric"],
            graph=graph if X.shape[0] > EXACT_SEARCH_MAX else None,
        )
        return Y

    def _transform(self, X: np.ndarray) -> np.ndarray:
        if self.options["transform"] == "umap":
            return self._model.transform(X)
        return self._knn_transform(X, self.options["transform_neighbors"])


def fit_aligned(
    Xs: list[np.ndarray], *, dims: int = 2, seed: int = 0, pca=None, **params: Any
) -> list[UMAPReducer]:
    """Fit umap-learn's ``AlignedUMAP`` on a sequence of tables of the same samples.

    ``Xs[i]`` holds the vectors of member i of a series, row r being the same sample in every
    member (the relation between neighbours is the identity). AlignedUMAP optimises all the
    layouts together with a penalty on each sample's distance to itself in the neighbouring
    layouts, so points move only where their neighbourhoods change. It has no ``transform``:
    each returned reducer places further rows by the ``knn`` transform (the weighted mean of
    the fitted coordinates of their nearest fitted rows in that member).

    Parameters
    ----------
    Xs : two or more (n, d_i) arrays with the same n (d_i may differ: layers).
    dims, seed, pca, **params : as for :class:`UMAPReducer`; ``transform`` must be ``knn``.

    Returns one fitted :class:`UMAPReducer` per member, ``embedding_`` its layout.
    """
    import umap

    reducers = [UMAPReducer(dims=dims, seed=seed, pca=pca, **params) for _ in Xs]
    o = reducers[0].options
    if o["transform"] != "knn":
        raise ConfigError(
            "umap parameter 'transform' must be 'knn' with AlignedUMAP (it cannot transform "
            f"new rows itself), got {o['transform']!r}"
        )
    rows = {np.asarray(X).shape[0] for X in Xs}
    if len(Xs) < 2 or len(rows) != 1 or min(rows) < 3:
        raise ValueError(f"AlignedUMAP: need 2+ tables of the same n >= 3 rows, got rows {rows}")
    Zs = [r._prereduce_fit(np.asarray(X)) for r, X in zip(reducers, Xs, strict=True)]
    n = Zs[0].shape[0]
    model = umap.AlignedUMAP(
        n_components=dims,
        n_neighbors=max(2, min(int(o["n_neighbors"]), n - 1)),
        min_dist=float(o["min_dist"]),
        metric=o["metric"],
        n_epochs=o["n_epochs"],
        init=o["init"],
        random_state=seed,
        transform_seed=seed,
    )
    identity = {i: i for i in range(n)}
    with warnings.catch_warnings():
        # AlignedUMAP builds its UMAPs without n_jobs; the seed makes them single-threaded
        # (as UMAPReducer is) and each one warns that it did.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        model.fit(Zs, relations=[identity] * (len(Zs) - 1))
    for r, Z, Y in zip(reducers, Zs, model.embeddings_, strict=True):
        r.embedding_ = np.ascontiguousarray(Y, dtype=np.float32)
        r._index = NeighbourIndex(Z, seed=seed, metric=o["metric"])
    return reducers
