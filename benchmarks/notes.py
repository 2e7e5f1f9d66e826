"""Goals from the issues and the notes printed under the results table in BENCHMARKS.md."""

GOALS = {
    "embed.pipeline_over_raw": ">= 0.9",
    "reduce.seconds": "1M <= 600 s",
}

NOTES = """
## How each number is measured

- `embed.pipeline_over_raw`: images per second of the whole `embed` step (PNG decode and
  preprocessing in 2 threads overlapping the model, Parquet writes, one warm-up run first) over
  images per second of the bare model forward on the same images already decoded and
  preprocessed, batch 32, 224 px. ViT-B/16 uses random weights (timing only).
- `reduce.seconds`: the whole `reduce` step over 50-D clustered vectors: UMAP 2D fitted on a
  seeded sample of at most 100K rows, the other rows placed by kNN-weighted interpolation of the
  fitted coordinates, then the Hilbert sort and Parquet writes.
- `synth.seconds`: `embviz synth --points 50000000`: samples, 256 sprites, 2D and 3D projections,
  Hilbert-sorted with per-partition bounds.

Reproduce: `make bench` (all), or `.venv/bin/python benchmarks/run.py --only embed`.
"""
