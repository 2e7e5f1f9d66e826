"""UMAP reducer (umap-learn): fits a fuzzy neighbour graph; new points by kNN interpolation."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from . import EXACT_SEARCH_MAX, KNNTransformMixin, NeighbourIndex, Reducer

__all__ = ["UMAPReducer"]


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
            init=o["init"],
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
