"""t-SNE reducer (openTSNE): strong local clusters; new points by kNN interpolation or openTSNE."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from . import KNNTransformMixin, NeighbourIndex, Reducer

__all__ = ["TSNEReducer"]


class TSNEReducer(KNNTransformMixin, Reducer):
    """t-distributed Stochastic Neighbour Embedding (openTSNE).

    The slowest method here (about 150 s for 100K x 50 on 2 cores) and the one that separates
    local clusters most crisply; distances between clusters mean little.

    Parameters
    ----------
    perplexity : effective number of neighbours each point attends to. Low (5-10) shows tight
        micro-clusters and noise; high (50-100+) shows more global structure and costs more
        time. Must be below n / 3; clipped when the sample is small. Default 30.
    exaggeration : attraction multiplier after the early-exaggeration phase; values above 1
        (e.g. 4 for millions of points) pull clusters tighter, like UMAP. None: openTSNE's 1.
    learning_rate : ``"auto"`` (n / 12, the robust choice) or a number.
    n_iter : optimisation iterations after early exaggeration. Default 500.
    metric : ``euclidean`` or ``cosine``. Default ``euclidean``.
    transform : ``knn`` (default, fast weighted mean of the fitted coordinates of the nearest
        fitted points) or ``tsne`` (openTSNE's ``transform``: optimises each new batch; slow).
    transform_neighbors : neighbours averaged by the ``knn`` transform. Default 10.
    n_jobs : threads for openTSNE. Default 1, which is exactly reproducible for a seed.

    2-D output uses the FFT-accelerated gradient from 10K points up (Barnes-Hut below, which
    is faster there); 3-D always uses Barnes-Hut (slower).
    """

    name: ClassVar[str] = "tsne"
    PARAMS: ClassVar[dict[str, Any]] = {
        "perplexity": 30.0,
        "exaggeration": None,
        "learning_rate": "auto",
        "n_iter": 500,
        "metric": "euclidean",
        "transform": "knn",
        "transform_neighbors": 10,
        "n_jobs": 1,
    }

    def _check_options(self) -> None:
        if self.options["transform"] not in ("knn", "tsne"):
            raise ConfigError(
                f"tsne parameter 'transform' must be 'knn' or 'tsne', got {self.options['transform']!r}"
            )
        if self.options["metric"] not in ("euclidean", "cosine"):
            raise ConfigError(
                f"tsne parameter 'metric' must be 'euclidean' or 'cosine', got {self.options['metric']!r}"
            )

    def _fit(self, X: np.ndarray) -> np.ndarray:
        import openTSNE

        o = self.options
        perplexity = min(float(o["perplexity"]), max(1.0, (X.shape[0] - 1) / 3.0))
        self._model = openTSNE.TSNE(
            n_components=self.dims,
            perplexity=perplexity,
            exaggeration=o["exaggeration"],
            learning_rate=o["learning_rate"],
            n_iter=int(o["n_iter"]),
            metric=o["metric"],
            negative_gradient_method="auto" if self.dims <= 2 else "bh",
            random_state=self.seed,
            n_jobs=int(o["n_jobs"]),
            verbose=False,
        ).fit(X)
        self._index = NeighbourIndex(X, seed=self.seed, metric=o["metric"])
        return np.asarray(self._model)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        if self.options["transform"] == "tsne":
            return np.asarray(self._model.transform(X))
        return self._knn_transform(X, self.options["transform_neighbors"])
