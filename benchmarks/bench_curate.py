"""Curation scores on planted problems: label flips, exact and near duplicates, outliers in MNIST."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np


def _rel(uris, folder: Path) -> list[str]:
    root = folder.resolve()
    return [Path(u).resolve().relative_to(root).as_posix() for u in uris]


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """Rows of the ``n`` highest values (NaN never chosen)."""
    v = np.where(np.isfinite(values), values, -np.inf)
    return np.argsort(-v, kind="stable")[:n]


def _columns(ds) -> dict[str, np.ndarray]:
    from embviz.samples import read_sample_columns

    names = ["uri", "label", "outlier_score", "label_issue_score", "suggested_label"]
    table = read_sample_columns(ds, [*names, "duplicate_group"])
    out = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    for c in ("uri", "label", "suggested_label"):
        out[c] = np.asarray(table.column(c).cast("string").to_pylist(), dtype=object)
    return out


def _label_recall(cols, row_of, truth) -> tuple[float, float]:
    """(recall of the flips in the top 5% of labelled rows, share suggesting the true label)."""
    score = cols["label_issue_score"].astype(np.float64)
    labelled = int(np.isfinite(score).sum())
    n_top = int(round(0.05 * labelled))
    top = set(_top(score, n_top).tolist())
    flipped = [row_of[p] for p in truth["flipped"]]
    recall = float(np.mean([r in top for r in flipped]))
    fixed = float(
        np.mean(
            [cols["suggested_label"][row_of[p]] == f["true"] for p, f in truth["flipped"].items()]
        )
    )
    return recall, fixed


def _duplicates(cols, row_of, truth) -> dict[str, float]:
    group = cols["duplicate_group"]
    out = {}
    planted_rows = set()
    for kind in ("exact", "near"):
        pairs = [(row_of[p["copy"]], row_of[p["original"]]) for p in truth[kind]]
        planted_rows |= {r for pair in pairs for r in pair}
        out[kind] = float(np.mean([group[c] >= 0 and group[c] == group[o] for c, o in pairs]))
    out["all"] = (out["exact"] * len(truth["exact"]) + out["near"] * len(truth["near"])) / (
        len(truth["exact"]) + len(truth["near"])
    )
    members = np.flatnonzero(group >= 0)
    out["precision"] = float(np.mean([m in planted_rows for m in members])) if len(members) else 1
    return out


def _outlier_methods(ds, embedding: str, k: int, ood_rows: np.ndarray, ids) -> dict[str, float]:
    """OOD recall of each outlier method on the saved neighbours (the step uses the default)."""
    from embviz import scores
    from embviz.pipeline.index import neighbour_matrix

    nbr, d = neighbour_matrix(ds, embedding, ids, k=k)
    out = {}
    for method in scores.OUTLIER_METHODS:
        s = scores.outlier_scores(nbr, d, method=method)
        out[method] = float(np.isin(_top(s, len(ood_rows)), ood_rows).mean())
    return out


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Plant problems in MNIST, run ingest, embed, index and score, and measure what is found.

    Returns ``curate.label_issue_recall_at_5pct`` (per label method), ``curate.
    suggested_label_accuracy``, ``curate.duplicate_recall`` (all, exact, near; with and without
    the pixel check), ``curate.duplicate_precision``, ``curate.duplicate_groups``,
    ``curate.ood_recall_at_n`` (per outlier method) and ``curate.seconds`` per step.
    """
    from embviz.config import load_recipe
    from embviz.dataset import open_dataset
    from embviz.pipeline.demo import DEMO_RECIPE
    from embviz.pipeline.embed import embed
    from embviz.pipeline.index import index
    from embviz.pipeline.ingest import ingest
    from embviz.pipeline.planted import read_truth, write_planted_folder
    from embviz.pipeline.score import score

    recipe = load_recipe(DEMO_RECIPE)
    emb_opts = recipe.embed[0]
    embedding = recipe.score.embedding
    layer = embedding.removeprefix(f"{emb_opts.model}.")
    k = recipe.score.k
    plant = (
        {"limit": 1000, "exact": 10, "near": 10, "ood": 10}
        if quick
        else {"limit": 5000, "exact": 50, "near": 50, "ood": 50}
    )
    images = write_planted_folder(work / f"curate-images-{plant['limit']}", **plant)
    truth = read_truth(images)
    out = work / f"curate-{plant['limit']}"
    shutil.rmtree(out, ignore_errors=True)  # time every step from scratch

    seconds = {}
    t0 = time.perf_counter()
    ingest(out, source=images, partition_rows=1000, thumb_size=64, progress=False)
    seconds["ingest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    embed(
        out,
        model=emb_opts.model,
        layers=[layer],
        reshape=emb_opts.reshape,
        image_size=emb_opts.image_size,
        batch_size=emb_opts.batch_size,
        progress=False,
    )
    seconds["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    index(out, embedding=embedding, k=k, progress=False)
    seconds["index"] = time.perf_counter() - t0
    result = score(out, embedding=embedding, k=k, progress=False)
    seconds["score"] = result.seconds

    ds = open_dataset(out)
    cols = _columns(ds)
    rel = _rel(cols["uri"], images)
    row_of = {r: i for i, r in enumerate(rel)}
    ood_rows = np.array([row_of[o["path"]] for o in truth["ood"]])
    # The planted counts and the embedding are in BENCHMARKS.md's notes.
    params = {"images": len(rel), "k": k}
    records: list[dict] = []

    def add(name: str, value: float, unit: str, **extra) -> None:
        records.append({"name": name, "params": {**params, **extra}, "value": value, "unit": unit})

    recall, fixed = _label_recall(cols, row_of, truth)
    add("curate.label_issue_recall_at_5pct", recall, "fraction", method=result.label_method)
    add("curate.suggested_label_accuracy", fixed, "fraction", method=result.label_method)
    dup = _duplicates(cols, row_of, truth)
    add("curate.duplicate_recall", dup["all"], "fraction", pixel_check=True)
    for kind in ("exact", "near"):
        add("curate.duplicate_recall", dup[kind], "fraction", pixel_check=True, kind=kind)
    add("curate.duplicate_precision", dup["precision"], "fraction", pixel_check=True)
    add("curate.duplicate_groups", result.exact_groups, "groups", pixel_check=True, kind="exact")
    add("curate.duplicate_groups", result.near_groups, "groups", pixel_check=True, kind="near")
    top = _top(cols["outlier_score"].astype(np.float64), len(ood_rows))
    add("curate.ood_recall_at_n", float(np.isin(top, ood_rows).mean()), "fraction", method="knn")
    for name, value in seconds.items():
        add("curate.seconds", value, "s", step=name)

    # The alternatives, on the same embedding and neighbours.
    ids = ds.read_arrow("samples", columns=["id"]).column("id").to_numpy()
    for method, value in _outlier_methods(ds, embedding, k, ood_rows, ids).items():
        if method != "knn":
            add("curate.ood_recall_at_n", value, "fraction", method=method)
    knn = score(out, embedding=embedding, k=k, label_method="knn", pixel_check=False, force=True)
    cols = _columns(open_dataset(out))
    recall, fixed = _label_recall(cols, row_of, truth)
    add("curate.label_issue_recall_at_5pct", recall, "fraction", method=knn.label_method)
    add("curate.suggested_label_accuracy", fixed, "fraction", method=knn.label_method)
    dup = _duplicates(cols, row_of, truth)
    add("curate.duplicate_recall", dup["all"], "fraction", pixel_check=False)
    add("curate.duplicate_recall", dup["near"], "fraction", pixel_check=False, kind="near")
    add("curate.duplicate_precision", dup["precision"], "fraction", pixel_check=False)
    add("curate.seconds", knn.seconds, "s", step="score", label_method="knn", pixel_check=False)
    return records


if __name__ == "__main__":
    import sys

    for r in run(Path(__file__).resolve().parent / ".work", quick="--quick" in sys.argv):
        print(r)
