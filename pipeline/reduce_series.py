"""The ``reduce --series`` step: aligned maps of every member of a series (checkpoints, layers).

Each member (an embedding table of the series, :mod:`embviz.series`) gets its own projection,
``projections/<member embedding>.<method><dims>d``, placed so that a sample moves between
neighbouring members only as far as its neighbourhood changes. Every member is fitted on the
same seeded sample of ids, then rotated, reflected, scaled and shifted onto the previous
member (Procrustes over the sample); every other row goes through the member's fitted reducer
(``transform``: the kNN interpolation of :mod:`embviz.reducers`, on Dask when asked), exactly
as :func:`~embviz.pipeline.reduce.reduce` does, so a series of maps of millions of rows fits
only the sample.

Alignment (``align``):

- ``chain`` (default for UMAP): member i's UMAP starts from member i-1's sample layout
  (:meth:`~embviz.reducers.umap_.UMAPReducer.fit_from`) with a learning rate of
  :data:`CHAIN_LEARNING_RATE`, then Procrustes.
- ``independent`` (default for PCA, t-SNE, PaCMAP): each member fitted on its own, then
  Procrustes; the only choice for methods without a starting layout.
- ``aligned-umap``: umap-learn's ``AlignedUMAP`` over the members' samples (identity relations),
  then Procrustes. It cannot transform new rows: rows outside the sample are placed by the
  same kNN interpolation over each member's sample, so it scales like the others, but it
  holds every member's sample in memory and fits each member twice (a UMAP, then the joint
  optimisation).

Measured on the demo's real digits (2,000 rows, 200 epochs, 2 shared cores, numba warm;
tests/test_reduce_series.py measures chain against independent and AlignedUMAP against
independent again on every run), as the median jump between neighbouring members, in
neighbourhoods (median over the series' steps), and the fitting time:

==============  ==========================  ===========================
align           checkpoint-like series (5)  layers blocks.5 -> pooled
==============  ==========================  ===========================
independent     8.8 (42 s)                  17.2 (21 s)
chain           6.0 (43 s)                  6.6 (19 s)
aligned-umap    4.5 (150 s)                 3.2 (36 s)
==============  ==========================  ===========================

(the checkpoint-like series mixes noise into the real ``blocks.5`` vectors, w = 0, .25, .5,
.75, 1: its middle step, where the digit classes appear, moves every method about 12
neighbourhoods, as it should.) Chain with learning rate 1.0 moved points as far as
independent fits (8.9); 0.1 keeps the last member's 2D k-NN accuracy (0.861 against 0.854
independent, 0.849 aligned-umap). AlignedUMAP moves points least, but costs 3.5 times as much
for 5 members (it fits each member's UMAP and then all of them jointly, growing with the
number of members) and holds every member's sample and graph in memory at once; chain costs
what independent fits cost, needs only the member being fitted, and moves points 30%
(checkpoints) to 60% (layers) less than independent fits. Chain is the default because the series this is for are long
(an epoch each) and big (maps of millions, fitted on 50,000-row samples); ask for
``aligned-umap`` when a short series should move as smoothly as possible.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embviz.dataset import Dataset, slugify
from embviz.errors import ConfigError
from embviz.evolution import jump, procrustes, quality
from embviz.reducers import get_reducer
from embviz.series import series_entry

from .choose import as_dataset
from .reduce import _read_sample, _transform_part, write_projection
from .runner import cluster_client, run_tasks
from .series_check import check_series

log = logging.getLogger(__name__)

__all__ = ["ALIGNS", "CHAIN_LEARNING_RATE", "SeriesReduceResult", "reduce_series"]

#: Alignment methods; the first is the default for UMAP.
ALIGNS = ("chain", "independent", "aligned-umap")
#: UMAP's initial learning rate for a chained member: low enough that points stay where the
#: previous member put them unless their neighbours change (1.0 moved them as far as an
#: independent fit did), high enough that classes forming in a later checkpoint still separate.
CHAIN_LEARNING_RATE = 0.1
#: Labelled rows of the sample that the k-NN accuracies use, and their k.
QUALITY_ROWS, QUALITY_K = 5000, 10


@dataclass(frozen=True)
class SeriesReduceResult:
    """What :func:`reduce_series` wrote, how far points jumped and how long it took."""

    series: str  #: the projection series written, ``<embedding series>.<method><dims>d``
    source: str  #: the embedding series projected
    kind: str  #: ``checkpoints`` or ``layers``
    align: str  #: the alignment used (see :data:`ALIGNS`)
    tables: tuple[str, ...]  #: ``projections/...`` per member, in order
    rows: int  #: rows per member
    sample_rows: int  #: rows every member was fitted on
    jumps: tuple[float | None, ...]  #: median jump from the previous member (None for the first)
    quality: tuple[dict, ...]  #: :func:`embviz.evolution.quality` per member
    seconds: float  #: wall time of the whole step
    fit_seconds: float  #: reading the samples and fitting
    transform_seconds: float  #: placing every row
    reused: bool = False  #: every member already matched these inputs and parameters


def _align_for(method: str, align: str | None) -> str:
    """The alignment to use: ``align`` checked, or the method's default."""
    if align is None:
        return "chain" if method == "umap" else "independent"
    if align not in ALIGNS:
        raise ConfigError(f"unknown alignment {align!r}; valid: {list(ALIGNS)}")
    if align != "independent" and method != "umap":
        raise ConfigError(
            f"alignment {align!r} needs method 'umap', got {method!r}; use align 'independent'"
        )
    return align


def _labels(ds: Dataset, ids: np.ndarray) -> np.ndarray | None:
    """The ``label`` of each of ``ids`` (None where missing), or None without labels."""
    if not ds.has("samples") or "label" not in ds.table("samples")["columns"]:
        return None
    t = ds.read_ids("samples", ids, ["label"])
    found = dict(zip(t.column("id").to_pylist(), t.column("label").to_pylist(), strict=True))
    return np.array([found.get(int(i)) for i in ids], dtype=object)


def _read_member(ds: Dataset, key: str, sample_ids: np.ndarray) -> np.ndarray:
    """The vectors of ``sample_ids`` (sorted) in member table ``key``, in that order."""
    ids, vecs = _read_sample(ds, key, sample=sample_ids.size, seed=0, only_ids=sample_ids)
    return vecs[np.argsort(ids, kind="stable")]


def _reused(ds: Dataset, keys: list[str], fingerprint: dict[str, Any]) -> list[dict] | None:
    """The members' metas when every one exists with ``fingerprint``, else None."""
    if not all(ds.has(k) and ds.meta(k).get("fingerprint") == fingerprint for k in keys):
        return None
    return [ds.meta(k) for k in keys]


def reduce_series(
    dataset: str | Path | Dataset,
    series: str,
    *,
    method: str = "umap",
    dims: int = 2,
    align: str | None = None,
    sample: int = 50_000,
    seed: int = 0,
    pca: int | float | None = None,
    params: dict[str, Any] | None = None,
    partition_rows: int = 1_000_000,
    scheduler: str | Any | None = None,
    progress: bool = True,
    force: bool = False,
) -> SeriesReduceResult:
    """Project every member of embedding series ``series``, aligned, with quality and jumps.

    Parameters
    ----------
    dataset : dataset path or :class:`~embviz.dataset.Dataset`.
    series : the embedding series' name (``embviz embed --checkpoints`` or a multi-layer
        embed wrote it; :func:`embviz.series.list_series` lists them).
    method : ``umap``, ``pca``, ``tsne`` or ``pacmap`` (see :mod:`embviz.reducers`).
    dims : 2 or 3.
    align : ``chain``, ``independent`` or ``aligned-umap`` (see the module docstring); None
        takes ``chain`` for UMAP and ``independent`` for the other methods.
    sample : rows every member is fitted on (the same seeded ids in each); the rest are
        transformed. Fitting costs grow with it times the number of members.
    seed : seeds the sample and the reducers.
    pca : PCA pre-reduction per member (components or variance fraction), as for ``reduce``.
    params : method parameters (``{"n_neighbors": 30}``); unknown names raise ConfigError.
    partition_rows : rows per projection partition file.
    scheduler : Dask scheduler address or ``distributed.Client`` for the transform; None runs here.
    progress : show progress bars.
    force : recompute even when every member exists with the same inputs and parameters.

    Each member's projection meta holds ``series`` (``<series>.<method><dims>d``, same kind,
    index and member label), ``alignment``, ``jump`` (median :func:`embviz.evolution.jump`
    over the sample from the previous member; None for the first) and ``quality``
    (:func:`embviz.evolution.quality` of the member's sample vectors and coordinates, labels
    from the samples table). The series is checked first (:func:`.series_check.check_series`:
    missing members, different samples, checkpoints of different dimensions raise
    :class:`~embviz.errors.DatasetError` naming the member) and nothing is written until every
    member is computed: memory holds one member's sample (every member's with
    ``aligned-umap``) and every member's coordinates (16 bytes per row and member; 800 MB for
    10 members of 5M rows). Returns a :class:`SeriesReduceResult`.
    """
    started = time.time()
    ds = as_dataset(dataset)
    params = dict(params or {})
    get_reducer(method, dims=dims, seed=seed, pca=pca, **params)  # bad options fail first
    align = _align_for(method, align)
    if sample < 3:
        raise ValueError(f"sample must be >= 3, got {sample}")
    members, ids, _ = check_series(ds, series)
    kind = members[0].kind
    out_series = f"{series}.{method}{dims}d"
    names = [slugify(f"{m.key.removeprefix('embeddings/')}.{method}{dims}d") for m in members]
    keys = [f"projections/{n}" for n in names]
    run_params = {
        "series": series,
        "method": method,
        "dims": dims,
        "align": align,
        "pca": pca,
        "sample": sample,
        "seed": seed,
        "params": params,
        "partition_rows": partition_rows,
    }
    # The members' table versions make the fingerprint: a re-embedded checkpoint re-projects all.
    fingerprint = json.loads(
        json.dumps(
            {"params": run_params, "sources": [ds.table(m.key)["dir"] for m in members]},
            default=str,
        )
    )
    metas = None if force else _reused(ds, keys, fingerprint)
    if metas is not None:
        return SeriesReduceResult(
            series=out_series,
            source=series,
            kind=kind,
            align=align,
            tables=tuple(keys),
            rows=int(ds.table(keys[0])["rows"]),
            sample_rows=int(metas[0]["sample_rows"]),
            jumps=tuple(m.get("jump") for m in metas),
            quality=tuple(m.get("quality") or {} for m in metas),
            seconds=round(time.time() - started, 3),
            fit_seconds=0.0,
            transform_seconds=0.0,
            reused=True,
        )

    rng = np.random.default_rng(seed)
    sample_ids = ids if ids.size <= sample else np.sort(rng.choice(ids, sample, replace=False))
    labels = _labels(ds, sample_ids)
    fitted_all = None
    aligned_s = 0.0
    if align == "aligned-umap":
        from embviz.reducers.umap_ import fit_aligned

        tick = time.time()
        samples = [_read_member(ds, m.key, sample_ids) for m in members]
        fitted_all = fit_aligned(samples, dims=dims, seed=seed, pca=pca, **params)
        aligned_s = time.time() - tick
    alignment = {"method": align, "procrustes": True, "sample_rows": int(sample_ids.size)}
    if align == "chain":
        alignment["learning_rate"] = CHAIN_LEARNING_RATE
    fit_s = aligned_s if fitted_all is not None else 0.0
    transform_s = 0.0
    prev = None  # the previous member's aligned sample layout
    written: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []
    with cluster_client(scheduler) as client:
        for i, m in enumerate(members):
            tick = time.time()
            X = samples[i] if fitted_all is not None else _read_member(ds, m.key, sample_ids)
            if fitted_all is not None:
                reducer = fitted_all[i]
            else:
                reducer = get_reducer(method, dims=dims, seed=seed, pca=pca, **params)
                if align == "chain" and prev is not None:
                    reducer.fit_from(X, prev, learning_rate=CHAIN_LEARNING_RATE)
                else:
                    reducer.fit(X)
            raw = reducer.embedding_
            onto = procrustes(raw, prev) if prev is not None else None
            layout = onto.apply(raw) if onto is not None else raw
            fit_s += time.time() - tick
            tick = time.time()
            shared: dict[str, Any] = {"reducer": reducer, "fitted_ids": sample_ids}
            shared["fitted_coords"] = raw
            if client is not None:
                shared = {k: client.scatter(v, broadcast=True) for k, v in shared.items()}
            paths = [str(p) for p in ds.part_paths(m.key)]
            weights = [p["rows"] for p in ds.table(m.key)["partitions"]]
            parts = run_tasks(
                _transform_part,
                paths,
                scheduler=client,
                desc=f"reduce {m.member} ({method}, {i + 1}/{len(members)})",
                unit="rows",
                progress=progress,
                weights=weights,
                **shared,
            )
            row_ids = np.concatenate([p[0] for p in parts])
            coords = np.concatenate([p[1] for p in parts])
            if onto is not None:
                coords = onto.apply(coords)
            transform_s += time.time() - tick
            moved = None if prev is None else float(np.median(jump(prev, layout, k=QUALITY_K)))
            meta = {
                "source": m.key,
                "method": method,
                "params": params,
                "reducer": reducer.params,
                "sample_rows": int(sample_ids.size),
                "series": series_entry(out_series, kind, m.index, m.member, m.size),
                "alignment": alignment,
                "jump": moved,
                "quality": quality(X, layout, labels, k=QUALITY_K, sample=QUALITY_ROWS, seed=seed),
                "fingerprint": fingerprint,
            }
            written.append((row_ids, coords, meta))
            prev = layout
            del X
    for name, (row_ids, coords, meta) in zip(names, written, strict=True):
        write_projection(ds, name, row_ids, coords, meta=meta, partition_rows=partition_rows)
    result = SeriesReduceResult(
        series=out_series,
        source=series,
        kind=kind,
        align=align,
        tables=tuple(keys),
        rows=int(ids.size),
        sample_rows=int(sample_ids.size),
        jumps=tuple(meta["jump"] for _, _, meta in written),
        quality=tuple(meta["quality"] for _, _, meta in written),
        seconds=round(time.time() - started, 3),
        fit_seconds=round(fit_s, 3),
        transform_seconds=round(transform_s, 3),
    )
    summary = {k: getattr(result, k) for k in result.__dataclass_fields__}
    ds.record_step("reduce_series", run_params, started=started, result=summary)
    return result
