"""``embviz report`` on 1M and 10M synthetic points: wall time per report, stages and HTML size."""

from __future__ import annotations

import statistics
from pathlib import Path


def _dataset(work: Path, n: int) -> Path:
    """The raster suite's synthetic dataset of ``n`` points when it exists, else our own."""
    from embviz.pipeline.synth import synth

    shared = work / f"raster-synth-{n}"
    if (shared / "manifest.json").exists():
        return shared  # only read (the explorer cache beside it is the raster suite's too)
    out = work / f"report-synth-{n}"
    if not (out / "manifest.json").exists():
        synth(out, points=n, dims=(2,), progress=False)
    return out


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Records ``report.seconds``, ``report.stage_seconds`` and ``report.html_bytes`` per size.

    Each report starts with no map in memory (as a fresh ``embviz report`` process whose
    explorer cache exists); one warm-up report first compiles the kernels. Median of 3.
    """
    from embviz.render.store import clear_stores
    from embviz.report import write_report

    sizes = [100_000, 1_000_000] if quick else [1_000_000, 10_000_000]
    records: list[dict] = []
    for n in sizes:
        root = _dataset(work, n)
        out = work / "report-out" / f"report-{n}.html"
        clear_stores()
        write_report(root, out)  # warm-up: Numba kernels, explorer cache
        runs = []
        for _ in range(3):
            clear_stores()
            runs.append(write_report(root, out))
        clear_stores()
        median = sorted(runs, key=lambda r: r.seconds)[1]
        params = {"points": n, "width": 900, "height": 640, "splits": len(median.splits)}
        records.append(
            {
                "name": "report.seconds",
                "params": params,
                "value": statistics.median(r.seconds for r in runs),
                "unit": "s",
            }
        )
        records += [
            {
                "name": "report.stage_seconds",
                "params": {**params, "stage": stage},
                "value": seconds,
                "unit": "s",
            }
            for stage, seconds in median.timings.items()
        ]
        records.append(
            {"name": "report.html_bytes", "params": params, "value": median.bytes, "unit": "bytes"}
        )
    return records
