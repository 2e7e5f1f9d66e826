"""The ``synth`` step: write a complete synthetic dataset (samples, sprites, 2-D/3-D projections) fast."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embviz.dataset import Dataset, TableWriter
from embviz.synth import SOURCES, SPLITS, SynthSpec, draw_sprite, generate_part, make_spec

from .reduce import write_projection
from .runner import run_tasks

__all__ = ["SynthResult", "synth"]


@dataclass(frozen=True)
class SynthResult:
    """What :func:`synth` wrote and how long it took."""

    root: str  #: dataset directory
    rows: int  #: points (rows of samples and of each projection)
    partitions: int  #: partitions of the samples table
    tables: tuple[str, ...]  #: table keys written
    seconds: float  #: wall time
    generate_seconds: float  #: samples generation and writing
    projection_seconds: float  #: Hilbert sort and writing of the projections


def _samples_table(part: dict[str, Any], spec: SynthSpec):
    import pyarrow as pa
    import pyarrow.compute as pc

    n = part["id"].shape[0]
    label_names = pa.array([f"class_{i:02d}" for i in range(spec.labels)])
    return pa.table(
        {
            "id": pa.array(part["id"]),
            "uri": pa.nulls(n, pa.string()),
            "label": pc.take(label_names, pa.array(part["label"])),
            "split": pc.take(pa.array(list(SPLITS)), pa.array(part["split"])),
            "width": pa.array(part["width"]),
            "height": pa.array(part["height"]),
            "content_hash": pa.nulls(n, pa.string()),
            "thumb_id": pa.array(part["thumb_id"]),
            "score": pa.array(part["score"]),
            "confidence": pa.array(part["confidence"]),
            "source": pc.take(pa.array(list(SOURCES)), pa.array(part["source"])),
        }
    )


def _synth_part(
    item: tuple[int, int, int], *, spec: SynthSpec, writer: TableWriter
) -> tuple[np.ndarray, np.ndarray]:
    """Task: generate one partition, write its samples rows, return its 2-D and 3-D points."""
    index, start, rows = item
    part = generate_part(spec, index, start, rows)
    writer.write_part(index, _samples_table(part, spec), id_range=(start, start + rows - 1))
    return part["xy"], part["xyz"]


def synth(
    out: str | Path,
    *,
    points: int,
    clusters: int = 40,
    labels: int = 10,
    seed: int = 0,
    partition_rows: int = 1_000_000,
    sprites: int = 256,
    dims: tuple[int, ...] = (2, 3),
    scheduler: str | Any | None = None,
    progress: bool = True,
) -> SynthResult:
    """Write a synthetic dataset at ``out``: samples, sprite thumbnails and projections.

    Points come from Gaussian clusters of very different sizes and spreads, a uniform
    background (2 %) and a dozen lone outliers; labels follow clusters with 5 % label noise;
    splits are train/test/prod 70/15/15 except for a few drift clusters that prod
    over-represents. No embedding table is written (the projections stand in for one).

    Parameters
    ----------
    out : dataset directory (created; an existing dataset there gets its tables replaced).
    points : number of points (rows).
    clusters : number of Gaussian clusters.
    labels : number of class labels (``class_00`` ...).
    seed : everything is drawn from this seed; the same seed gives the same dataset.
    partition_rows : rows per partition, generated independently (own seed) and in parallel
        on the cluster when ``scheduler`` is given.
    sprites : number of procedurally drawn 64 px WebP sprites in ``thumbnails``; points of one
        cluster use sprites of one shape and colour.
    dims : projections to write: ``synth.2d`` for 2 and ``synth.3d`` for 3.
    scheduler : Dask scheduler address or ``distributed.Client``; None runs here.
    progress : show a progress bar.

    Returns a :class:`SynthResult`.
    """
    import pyarrow as pa

    started = time.time()
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    if partition_rows < 1:
        raise ValueError(f"partition_rows must be >= 1, got {partition_rows}")
    bad = [d for d in dims if d not in (2, 3)]
    if bad or not dims:
        raise ValueError(f"dims must be a non-empty subset of (2, 3), got {dims!r}")
    spec = make_spec(clusters=clusters, labels=labels, sprites=sprites, seed=seed)
    params = {
        "generator": "embviz.synth",
        "points": points,
        "clusters": clusters,
        "labels": labels,
        "seed": seed,
        "partition_rows": partition_rows,
        "sprites": sprites,
        "dims": list(dims),
    }
    ds = Dataset.create(out)

    # Thumbnails first: cheap, and the samples table refers to them.
    families = min(clusters, sprites)
    thumbs = pa.table(
        {
            "thumb_id": pa.array(np.arange(sprites, dtype=np.int64)),
            "image": pa.array(
                [draw_sprite(i, families=families) for i in range(sprites)], pa.binary()
            ),
            "width": pa.array(np.full(sprites, 64, np.int32)),
            "height": pa.array(np.full(sprites, 64, np.int32)),
        }
    )
    tw = ds.writer("thumbnails")
    tw.write_part(0, thumbs, id_range=(0, sprites - 1))
    tw.commit({"format": "webp", "size": 64, "synth": params})

    items = [
        (i, s, min(partition_rows, points - s))
        for i, s in enumerate(range(0, points, partition_rows))
    ]
    sw = ds.writer("samples")
    try:
        parts = run_tasks(
            _synth_part,
            items,
            scheduler=scheduler,
            desc="synth",
            unit="rows",
            progress=progress,
            weights=[r for _, _, r in items],
            spec=spec,
            writer=sw,
        )
        sw.commit({"synth": params})
    except BaseException:
        sw.abort()
        raise
    generated = time.time()

    ids = np.arange(points, dtype=np.int64)
    tables = ["thumbnails", "samples"]
    for d in dims:
        coords = np.concatenate([p[0] if d == 2 else p[1] for p in parts])
        write_projection(
            ds,
            f"synth.{d}d",
            ids,
            coords,
            meta={"method": "synth", "source": None, "synth": params},
            partition_rows=partition_rows,
        )
        del coords
        tables.append(f"projections/synth.{d}d")
    del parts
    done = time.time()
    result = SynthResult(
        root=str(ds.root),
        rows=points,
        partitions=len(items),
        tables=tuple(tables),
        seconds=round(done - started, 3),
        generate_seconds=round(generated - started, 3),
        projection_seconds=round(done - generated, 3),
    )
    ds.reload()
    ds.record_step("synth", params, started=started, result={"rows": points, "tables": tables})
    return result
