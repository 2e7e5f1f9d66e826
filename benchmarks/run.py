"""Benchmark harness: runs the suites, merges records into results.json, rewrites BENCHMARKS.md.

Usage: ``python benchmarks/run.py [--only embed,reduce,synth] [--quick]``. Each record is
``{"name", "params", "value", "unit"}``; a rerun replaces records with the same name and params.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
RESULTS = HERE / "results.json"
REPORT = ROOT / "BENCHMARKS.md"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

SUITES = (
    "embed",
    "reduce",
    "synth",
    "raster",
    "cloud3d",
    "report",
    "index",
    "curate",
    "labels",
    "insight",
    "serve",
    "clusters",
    "imagemap",
    "dask_raster",
    "page",
    "pyramid",
    "reliability",
    "evolution",
)
#: Suites run only when named with --only: ``soak`` runs for hours (EMBVIZ_SOAK_MINUTES).
OPTIONAL_SUITES = ("soak",)


def _merge(records: list[dict]) -> list[dict]:
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    key = lambda r: (r["name"], json.dumps(r["params"], sort_keys=True))  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in records})
    return sorted(merged.values(), key=lambda r: key(r))


def _report(records: list[dict]) -> str:
    from notes import GOALS, NOTES

    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python benchmarks/run.py`); raw records in",
        "`benchmarks/results.json`. The machine is shared and noisy: compare ratios taken in one run.",
        "",
        f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()},",
        f"{os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| name | params | value | unit | goal |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(
            f"| `{r['name']}` | {params} | {r['value']:.4g} | {r['unit']} | {GOALS.get(r['name'], '')} |"
        )
    lines += ["", NOTES.strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suites and write the results; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    p.add_argument("--quick", action="store_true", help="small sizes, for checking the harness")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    WORK.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    for suite in args.only.split(","):
        if suite not in SUITES + OPTIONAL_SUITES:
            p.error(f"unknown suite {suite!r}; valid: {', '.join(SUITES + OPTIONAL_SUITES)}")
        module = __import__(f"bench_{suite}")
        t0 = time.time()
        got = module.run(WORK, quick=args.quick)
        print(f"[bench] {suite}: {len(got)} records in {time.time() - t0:.0f} s", flush=True)
        for r in got:
            print(f"  {r['name']} {r['params']} = {r['value']:.4g} {r['unit']}", flush=True)
        records += got
        merged = _merge(records)  # write after every suite: a long run that dies keeps its results
        RESULTS.write_text(json.dumps(merged, indent=2) + "\n")
        REPORT.write_text(_report(merged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
