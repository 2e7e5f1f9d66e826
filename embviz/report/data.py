"""What a report says about a dataset: its map, counts, score picks and split shift, as arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SCORE_COLUMNS",
    "Categories",
    "Picks",
    "Samples",
    "choose_projection",
    "crosstab",
    "duplicate_groups",
    "load_samples",
    "reference_split",
    "top_rows",
]

#: Score columns a report looks for, in ``samples`` or a ``scores`` table joined on ``id``:
#: ``outlier_score`` (higher = more unusual), ``label_issue_score`` (higher = label more
#: likely wrong), ``duplicate_group`` (int, -1 = none).
SCORE_COLUMNS = ("outlier_score", "label_issue_score", "duplicate_group")


def choose_projection(ds) -> str | None:
    """The first 2D projection of ``ds``: UMAP, then PaCMAP, t-SNE, PCA, anything else; by name."""
    from embviz.projections import projection_choices

    for choices in projection_choices(ds, dims=2).values():
        return next(iter(choices.values()))
    return None


@dataclass
class Categories:
    """A categorical column as integer codes into sorted names (``(none)`` for missing values)."""

    codes: np.ndarray
    names: list[str]

    @classmethod
    def of(cls, column) -> Categories:
        """Codes and names of a pyarrow (chunked) column; strings, booleans or integers."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column.combine_chunks())
            column = pa.chunked_array([column])
        chunks = column.chunks
        if any(not c.dictionary.equals(chunks[0].dictionary) for c in chunks[1:]):
            merged = pc.dictionary_encode(column.cast(column.type.value_type).combine_chunks())
            chunks = [merged]
        names = [str(v) for v in chunks[0].dictionary.to_pylist()] if chunks else []
        none = len(names)
        codes = np.concatenate(
            [c.indices.fill_null(none).to_numpy() for c in chunks] or [np.empty(0, np.int32)]
        ).astype(np.int64, copy=False)
        if len(codes) and codes.max(initial=0) == none:
            names.append("(none)")
        # Sorted names, as the explorer's store sorts them, so colours match the app's.
        perm = np.argsort(np.array(names, dtype=object), kind="stable")
        remap = np.empty(len(names), dtype=np.int64)
        remap[perm] = np.arange(len(names))
        return cls(remap[codes] if len(names) else codes, [names[i] for i in perm])

    @classmethod
    def constant(cls, n: int, name: str) -> Categories:
        """Every one of ``n`` rows in the one category ``name``."""
        return cls(np.zeros(n, dtype=np.int64), [name])


@dataclass
class Samples:
    """The samples columns a report uses, row-aligned with ``ids``."""

    ids: np.ndarray  #: sample ids
    labels: Categories  #: ``label`` (or one ``(all)`` category when there is none)
    splits: Categories  #: ``split`` (or one ``(all)`` category)
    columns: list[str]  #: categorical columns present: ``label``, ``split``, ``cluster``
    clusters: Categories | None = None  #: ``cluster`` when the samples have one
    thumb_ids: np.ndarray | None = None  #: ``thumb_id`` (-1 = none), read only for galleries
    scores: dict[str, np.ndarray] = field(default_factory=dict)  #: the SCORE_COLUMNS present

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.ids)


def load_samples(ds) -> Samples:
    """Read only what a report needs: label, split, cluster; thumb_id and scores if scored.

    Score columns come from ``samples`` or the ``scores`` table (:mod:`embviz.samples`); a
    sample with no score row reads NaN (or -1 for ``duplicate_group``).
    """
    from embviz.samples import read_sample_columns, sample_columns

    types = sample_columns(ds)
    in_samples = [c for c in SCORE_COLUMNS if c in types]
    present = [c for c in ("label", "split", "cluster") if c in types]
    wanted = list(present)
    if in_samples:
        wanted += [c for c in ("thumb_id",) if c in types] + in_samples
    table = read_sample_columns(ds, wanted)
    n = table.num_rows

    def cats(name: str) -> Categories:
        return (
            Categories.of(table.column(name))
            if name in present
            else Categories.constant(n, "(all)")
        )

    samples = Samples(
        ids=table.column("id").to_numpy(),
        labels=cats("label"),
        splits=cats("split"),
        columns=present,
        clusters=cats("cluster") if "cluster" in present else None,
    )
    if "thumb_id" in wanted:
        samples.thumb_ids = table.column("thumb_id").fill_null(-1).to_numpy()
    for c in in_samples:
        col = table.column(c)
        col = col.fill_null(-1) if c == "duplicate_group" else col  # floats: nulls become NaN
        samples.scores[c] = col.to_numpy(zero_copy_only=False)
    return samples


def crosstab(rows: Categories, cols: Categories) -> np.ndarray:
    """Counts of every (row category, column category) pair: an int64 array (rows, cols)."""
    nr, nc = len(rows.names), len(cols.names)
    flat = np.bincount(rows.codes * nc + cols.codes, minlength=nr * nc)
    return flat.reshape(nr, nc)


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` highest finite scores, highest first (O(n), not a full sort)."""
    s = np.asarray(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    finite = np.isfinite(s)
    k = min(k, int(finite.sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if not finite.all():  # argpartition sorts NaN last, i.e. as the highest
        s = np.where(finite, s, -np.inf)
    part = np.argpartition(s, len(s) - k)[len(s) - k :]
    return part[np.argsort(-s[part], kind="stable")]


@dataclass
class Picks:
    """The largest duplicate groups and some of their rows."""

    groups: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  #: (group, size, rows)
    n_groups: int = 0  #: groups with at least two rows
    n_rows: int = 0  #: rows in such groups


def duplicate_groups(group: np.ndarray, *, top: int, per_group: int) -> Picks:
    """The ``top`` largest groups (ties: smaller id first) of ``group`` (-1 = no group)."""
    group = np.asarray(group)
    valid = np.flatnonzero(group >= 0)
    if not len(valid):
        return Picks()
    g = group[valid].astype(np.int64, copy=False)
    if g.max() <= 4 * len(group) + 1024:
        sizes = np.bincount(g)
        ids = np.flatnonzero(sizes >= 2)
        counts = sizes[ids]
    else:  # sparse, huge group ids: a sort instead of a counting array
        ids, counts = np.unique(g, return_counts=True)
        keep = counts >= 2
        ids, counts = ids[keep], counts[keep]
    order = np.lexsort((ids, -counts))[:top]
    chosen, sizes_chosen = ids[order], counts[order]
    hit = valid[np.isin(g, chosen)]
    picks = Picks(n_groups=len(ids), n_rows=int(counts.sum()))
    for gid, size in zip(chosen, sizes_chosen, strict=True):
        rows = hit[group[hit] == gid][:per_group]
        picks.groups.append((int(gid), int(size), rows))
    return picks


def reference_split(names: list[str], counts: np.ndarray) -> str:
    """The split others are compared with: ``train`` (any case), else the largest."""
    for name in names:
        if name.lower() == "train":
            return name
    return names[int(np.argmax(counts))]
