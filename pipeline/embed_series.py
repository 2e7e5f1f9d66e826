"""``embed`` over a series: one embedding per checkpoint of a model, and the series meta of each table."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from embviz.dataset import Dataset, slugify
from embviz.errors import ModelError
from embviz.series import series_entry

if TYPE_CHECKING:
    from .embed import EmbedResult

__all__ = [
    "WEIGHT_SUFFIXES",
    "Member",
    "checkpoint_members",
    "check_members",
    "embed_checkpoints",
    "layer_series",
    "natural_key",
    "series_names",
    "update_series",
]

#: Files a checkpoint folder's members are chosen from (other files, e.g. training.json, are not).
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass(frozen=True)
class Member:
    """One checkpoint of a series: its ``label`` (file stem or revision), ``source`` (the file
    or revision) and ``model``, the model name that loads it (``cnn?weights=/abs/epoch-003.pt``)."""

    label: str
    source: str
    model: str


def natural_key(text: str) -> list[Any]:
    """Sort key reading digit runs as numbers: ``epoch-2`` before ``epoch-10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _member_option(model: str) -> str:
    """The load option of ``model``'s family that takes one member: a file or a revision."""
    from embviz.models import parse_model_name

    family, _, options = parse_model_name(model)
    option = {"hf": "revision", "timm": "checkpoint"}.get(family, "weights")
    if family == "tv":
        raise ModelError(
            f"model {model!r}: torchvision models load their own weight sets, not checkpoint "
            "files; use a timm: model (its checkpoints load with checkpoint=) or cnn"
        )
    if option in options:
        raise ModelError(
            f"model {model!r} already names its {option}; give the model without it and the "
            "series through checkpoints"
        )
    return option


def checkpoint_members(
    model: str, checkpoints: str | Path | Sequence[str | Path], root: str | Path
) -> list[Member]:
    """The members of a checkpoint series, in order.

    Parameters
    ----------
    model:
        The model every checkpoint is a set of weights for (``cnn``, ``efficientnet_lite0``,
        ``timm:<name>``, or ``hf:<id>`` whose members are revisions).
    checkpoints:
        A folder (its ``.pt``/``.pth``/``.ckpt``/``.bin`` files in natural order, hidden files
        skipped), one file, or a list of files in the order given; for ``hf:`` models, one
        revision or a list of them (branches, tags, commits).
    root:
        Relative paths are inside this folder (the dataset's).

    Raises
    ------
    ModelError
        An empty series, a folder without weight files, two members with the same name, or a
        model family without checkpoint files (``tv:``).
    """
    option = _member_option(model)
    root = Path(root)
    if option == "revision":
        given = [checkpoints] if isinstance(checkpoints, str | Path) else list(checkpoints)
        sources = [str(r) for r in given]
        labels = list(sources)
    else:
        if isinstance(checkpoints, str | Path):
            one = _resolve(root, checkpoints)
            if one.is_dir():
                found = [
                    p
                    for p in one.iterdir()
                    if p.is_file()
                    and p.suffix.lower() in WEIGHT_SUFFIXES
                    and not p.name.startswith(".")
                ]
                if not found:
                    raise ModelError(
                        f"{one}: no checkpoint files ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})"
                    )
                paths = sorted(found, key=lambda p: natural_key(p.name))
            else:
                paths = [one]
        else:
            paths = [_resolve(root, p) for p in checkpoints]
        sources = [str(p) for p in paths]
        labels = [p.stem for p in paths]
    if not sources:
        raise ModelError(f"model {model!r}: the series of checkpoints is empty")
    slugs = [slugify(label) for label in labels]
    twice = sorted({s for s in slugs if slugs.count(s) > 1})
    if twice:
        raise ModelError(
            f"checkpoints {twice} appear more than once (members are named by their file stem "
            "or revision, so each needs its own)"
        )
    sep = "&" if "?" in model else "?"
    return [
        Member(label=label, source=src, model=f"{model}{sep}{option}={quote(src, safe='/')}")
        for label, src in zip(labels, sources, strict=True)
    ]


def _resolve(root: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return (path if path.is_absolute() else root / path).absolute()


def check_members(
    members: Sequence[Member], *, layers: Sequence[str] | None, image_size: int | None
) -> list[str]:
    """Load every member on the CPU, one at a time, and check it has ``layers`` with the first
    member's shapes; return the layers (default: the model's ``pooled``).

    Raises :class:`ModelError` naming the member (its position, name and file) that is missing,
    unreadable, corrupt, of another architecture, or whose layers differ.
    """
    from embviz.models import get_embedder

    shapes: dict[str, tuple[int, ...]] | None = None
    wanted: list[str] = []
    for i, member in enumerate(members):
        where = f"checkpoint {i} {member.label!r} ({member.source})"
        try:
            emb = get_embedder(member.model, device="cpu", image_size=image_size)
            wanted = list(dict.fromkeys(layers or [emb.default_layer]))
            emb.check_layers(wanted)
            got = {n: s for n, s in emb.layers() if n in wanted}
        except Exception as exc:
            raise ModelError(f"{where}: {exc}") from exc
        if shapes is None:
            shapes = got
        elif got != shapes:
            raise ModelError(
                f"{where}: layer shapes {got} differ from those of checkpoint 0 "
                f"{members[0].label!r} {shapes}; a series needs one architecture"
            )
        del emb
    return wanted


def embed_checkpoints(
    ds: Dataset,
    *,
    model: str,
    checkpoints: str | Path | Sequence[str | Path],
    name: str | None = None,
    series: str | None = None,
    layers: Sequence[str] | None = None,
    reshape: str | Callable[[Any], Any] = "mean",
    batch_size: int = 32,
    image_size: int | None = None,
    device: str = "auto",
    threads: int = 2,
    scheduler: str | Any | None = None,
    progress: bool = True,
    force: bool = False,
) -> EmbedResult:
    """Embed ``ds`` with each checkpoint of ``model``: one table per checkpoint and layer.

    Tables are ``embeddings/<name>-<member>.<layer>`` (``cnn-epoch-003.pooled``), each with a
    ``series`` meta entry (kind ``checkpoints``) named ``series`` (default
    ``<name>-checkpoints``; with several layers, one series per layer:
    ``<series>-<layer>``). Every member is loaded and checked first (see
    :func:`check_members`), so a bad one stops the run before anything is written. Members are
    then embedded in order, each resumable like any ``embed``: finished members are reused,
    a stopped one redoes only its unfinished partitions. Each member's model is released
    after its pass, so a long series holds one model at a time. Other parameters as for
    :func:`embviz.pipeline.embed.embed`.

    Returns an :class:`~embviz.pipeline.embed.EmbedResult` over all members: ``tables`` in
    member order (then layer), ``images_per_second`` the mean over the members that ran.
    """
    from embviz.models import forget_embedder, model_slug

    from .embed import EmbedResult, embed_tables

    t0 = time.time()
    members = checkpoint_members(model, checkpoints, ds.root)
    layers = check_members(members, layers=layers, image_size=image_size)
    prefix = slugify(name) if name else model_slug(model)
    base = series or f"{prefix}-checkpoints"
    results, entries = [], {}
    for i, member in enumerate(members):
        meta = {
            layer: series_entry(
                base if len(layers) == 1 else f"{base}-{slugify(layer)}",
                "checkpoints",
                i,
                member.label,
                len(members),
            )
            for layer in layers
        }
        results.append(
            embed_tables(
                ds,
                model=member.model,
                name=f"{prefix}-{slugify(member.label)}",
                layers=layers,
                reshape=reshape,
                batch_size=batch_size,
                image_size=image_size,
                device=device,
                threads=threads,
                scheduler=scheduler,
                progress=progress,
                force=force,
                series_meta=meta,
                desc=f"embed {prefix} {member.label} ({i + 1}/{len(members)})",
                identity=model,
            )
        )
        forget_embedder(member.model, image_size=image_size, device=device)
        entries.update(zip(results[-1].tables, meta.values(), strict=True))
    update_series(ds, entries, exclusive=True)
    failed = {f["id"]: f for r in results for f in r.failed}
    ran = [r.images_per_second for r in results if r.images_per_second]
    return EmbedResult(
        tables=[t for r in results for t in r.tables],
        rows=results[-1].rows,
        seconds=round(time.time() - t0, 3),
        images_per_second=round(sum(ran) / len(ran), 2) if ran else 0.0,
        partitions_done=sum(r.partitions_done for r in results),
        partitions_skipped=sum(r.partitions_skipped for r in results),
        failed=[failed[k] for k in sorted(failed)],
        reused=all(r.reused for r in results),
        series=list(dict.fromkeys(s for r in results for s in r.series)),
    )


def layer_series(name: str, layers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{layer: series entry}`` of a ``layers`` series named ``name`` (in the order given);
    empty for a single layer (no series)."""
    if len(layers) < 2:
        return {}
    return {
        layer: series_entry(name, "layers", i, layer, len(layers)) for i, layer in enumerate(layers)
    }


def series_names(series_meta: dict[str, dict[str, Any]]) -> list[str]:
    """The distinct series names of ``{layer: series entry}``, in order."""
    return list(dict.fromkeys(entry["name"] for entry in series_meta.values()))


def update_series(
    ds: Dataset, entries: dict[str, dict[str, Any]], *, exclusive: bool = False
) -> None:
    """Set the ``series`` meta of the published tables ``{key: entry}`` whose entry differs
    (a table reused by a later run joins that run's series: another position, size or name).

    A table belongs to one series, the last run's. With ``exclusive`` (``entries`` is the whole
    series), other embedding tables that still claim one of these series names (members of an
    earlier, longer run) leave it, so the series stays complete and in order.
    """
    names = {e["name"] for e in entries.values()}

    def leaving(m: dict[str, Any]) -> list[str]:
        if not exclusive:
            return []
        return [
            key
            for key, table in m["tables"].items()
            if key.startswith("embeddings/")
            and key not in entries
            and (table.get("meta") or {}).get("series", {}).get("name") in names
        ]

    stale = {k: e for k, e in entries.items() if ds.meta(k).get("series") != e}
    if not stale and not leaving(ds.manifest):
        return

    def change(m: dict[str, Any]) -> None:
        for key, entry in entries.items():
            m["tables"][key]["meta"]["series"] = entry
        for key in leaving(m):
            del m["tables"][key]["meta"]["series"]

    ds.update_manifest(change)
