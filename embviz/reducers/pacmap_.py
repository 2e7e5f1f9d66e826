"""PaCMAP reducer: balances local and global structure; new points by kNN interpolation."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from . import KNNTransformMixin, NeighbourIndex, Reducer

__all__ = ["PaCMAPReducer"]


class PaCMAPReducer(KNNTransformMixin, Reducer):
    """Pairwise Controlled Manifold Approximation (pacmap).

    About twice as fast as UMAP here and better at keeping the relative placement of clusters.

    Parameters
    ----------
    n_neighbors : near pairs per point; None lets PaCMAP pick (10 below 10K points, growing
        slowly above). Larger values keep more global structure, cost more time. Default None.
    MN_ratio : mid-near pairs per near pair; more of them pull the global layout together.
        Default 0.5.
    FP_ratio : further pairs per near pair; more of them push clusters apart. Default 2.0.
    num_iters : iterations of PaCMAP's last, local phase (after two 100-iteration phases that
        settle the global layout). Default 250.
    transform : ``knn`` (default: weighted mean of the fitted coordinates of the nearest fitted
        points) or ``pacmap`` (PaCMAP's own ``transform``, which re-optimises the new points
        against the fitted ones; slow and memory hungry for millions).
    transform_neighbors : neighbours averaged by the ``knn`` transform. Default 10.
    """

    name: ClassVar[str] = "pacmap"
    PARAMS: ClassVar[dict[str, Any]] = {
        "n_neighbors": None,
        "MN_ratio": 0.5,
        "FP_ratio": 2.0,
        "num_iters": 250,
        "transform": "knn",
        "transform_neighbors": 10,
    }

    def _check_options(self) -> None:
        if self.options["transform"] not in ("knn", "pacmap"):
            raise ConfigError(
                f"pacmap parameter 'transform' must be 'knn' or 'pacmap', got {self.options['transform']!r}"
            )

    def _fit(self, X: np.ndarray) -> np.ndarray:
        import pacmap

        o = self.options
        n_neighbors = o["n_neighbors"]
        if n_neighbors is not None:
            n_neighbors = max(2, min(int(n_neighbors), X.shape[0] - 2))
        elif X.shape[0] <= 11:
            n_neighbors = max(2, X.shape[0] - 2)
        # No saved tree: the fitted sample is kept instead, so the reducer pickles to workers.
        self._model = pacmap.PaCMAP(
            n_components=self.dims,
            n_neighbors=n_neighbors,
            MN_ratio=float(o["MN_ratio"]),
            FP_ratio=float(o["FP_ratio"]),
            num_iters=int(o["num_iters"]),
            random_state=self.seed,
            save_tree=False,
            verbose=False,
        )
        Y = self._model.fit_transform(X, init="pca")
        self._index = NeighbourIndex(X, seed=self.seed)
        return Y

    def _transform(self, X: np.ndarray) -> np.ndarray:
        if self.options["transform"] == "pacmap":
            return self._model.transform(X, basis=self._index.data)
        return self._knn_transform(X, self.options["transform_neighbors"])
