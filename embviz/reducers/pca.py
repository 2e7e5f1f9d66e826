"""PCA reducer: a linear projection onto the top principal components; exact and fast."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import Reducer

__all__ = ["PCAReducer"]


class PCAReducer(Reducer):
    """Principal component analysis (scikit-learn).

    Fast (about 1.4 s for 100K x 50) and linear, so ``transform`` is exact and a sample fit
    generalises perfectly; but it keeps only global variance, so clusters that differ in few
    directions overlap. Use it for a first look, or as the ``pca`` pre-reduction of the others.

    Parameters
    ----------
    whiten : scale components to unit variance (spreads small-variance directions; default off).
    """

    name: ClassVar[str] = "pca"
    PARAMS: ClassVar[dict[str, Any]] = {"whiten": False}

    def _fit(self, X: np.ndarray) -> np.ndarray:
        from sklearn.decomposition import PCA

        n_comp = min(self.dims, X.shape[1], X.shape[0])
        solver = "full" if min(X.shape) <= 500 else "randomized"
        self._model = PCA(
            n_components=n_comp,
            whiten=bool(self.options["whiten"]),
            svd_solver=solver,
            random_state=self.seed,
        ).fit(X)
        return self._transform(X)

    def _transform(self, X: np.ndarray) -> np.ndarray:
        Y = self._model.transform(X).astype(np.float32)
        if Y.shape[1] < self.dims:  # fewer input dimensions than requested output
            Y = np.hstack([Y, np.zeros((Y.shape[0], self.dims - Y.shape[1]), np.float32)])
        return Y
