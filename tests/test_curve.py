"""Tests for the Hilbert-curve layout: neighbours stay close, partitions are compact, bounds exact."""

from __future__ import annotations

import numpy as np
import pytest

from embviz.curve import bounds_of, hilbert_distances, hilbert_order, layout_partitions


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(0).uniform(-5, 5, size=(20_000, 2))


def _mean_step(p):
    return np.linalg.norm(np.diff(p, axis=0), axis=1).mean()


@pytest.mark.parametrize("dims", [2, 3])
def test_order_keeps_neighbours(dims):
    pts = np.random.default_rng(dims).normal(size=(10_000, dims))
    order = hilbert_order(pts)
    assert sorted(order.tolist()) == list(range(len(pts)))
    assert _mean_step(pts[order]) < 0.1 * _mean_step(pts)


def test_partitions_are_compact(points):
    total = np.prod(np.ptp(points, axis=0))
    parts = list(layout_partitions(np.arange(len(points)), points, partition_rows=1_250))
    assert [p[0] for p in parts] == list(range(16))
    areas = [np.prod([b[1] - b[0] for b in bounds.values()]) for *_, bounds in parts]
    assert sum(areas) < 0.25 * len(parts) * total
    ids = np.concatenate([p[1] for p in parts])
    assert sorted(ids.tolist()) == list(range(len(points)))
    for _, id_chunk, chunk, bounds in parts:
        np.testing.assert_array_equal(chunk, points[id_chunk])
        assert bounds == bounds_of(chunk)


def test_bounds_exact():
    pts = np.array([[0.5, -2.0, 3.0], [1.5, 4.0, -1.0], [np.nan, 0.0, 0.0]])
    assert bounds_of(pts) == {"x": [0.5, 1.5], "y": [-2.0, 4.0], "z": [-1.0, 3.0]}
    assert bounds_of(np.zeros((0, 2))) == {}
    assert list(layout_partitions(np.zeros(0), np.zeros((0, 2)), partition_rows=10)) == []


def test_distances_use_given_bounds():
    """Chunks sorted against shared global bounds give comparable distances."""
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [10.0, 10.0]])
    whole = hilbert_distances(pts, {"x": [0, 10], "y": [0, 10]})
    part = hilbert_distances(pts[:2], {"x": [0, 10], "y": [0, 10]})
    np.testing.assert_array_equal(whole[:2], part)
    # outside the bounds: clamped, not wrapped
    assert hilbert_distances(np.array([[20.0, 20.0]]), {"x": [0, 10], "y": [0, 10]})[0] == whole[2]


def test_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        hilbert_order(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="bits"):
        hilbert_order(np.zeros((3, 3)), bits=30)
