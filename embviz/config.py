"""The one YAML loader: recipes and settings become dataclasses; unknown keys fail by name."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = [
    "ClusterConfig",
    "EmbedConfig",
    "IndexConfig",
    "Recipe",
    "ReduceConfig",
    "ReportSettings",
    "PredictConfig",
    "ScoreConfig",
    "SourceConfig",
    "TrainConfig",
    "check_schedule",
    "from_mapping",
    "load_recipe",
    "load_report_settings",
    "load_yaml",
]

T = TypeVar("T")


@dataclass
class SourceConfig:
    """Where the images or vectors come from; keys are the options of ``embviz ingest``."""

    path: str
    kind: str = "auto"  #: auto, folder, manifest, vectors, or mnist (the demo's digits)
    limit: int | None = None
    partition_rows: int = 10_000
    thumb_size: int = 96
    max_pixels: int = 100_000_000
    threads: int = 2
    metadata: str | None = None
    vector_column: str = "vector"
    coord_columns: list[str] | None = None
    embedding_name: str = "user"


@dataclass
class EmbedConfig:
    """One model pass; keys are the options of ``embviz embed``."""

    model: str = "efficientnet_lite0"
    layers: list[str] | None = None
    reshape: str = "mean"
    batch_size: int = 32
    image_size: int | None = None
    device: str = "auto"
    threads: int = 2
    name: str | None = None
    predict: bool = False  #: also the head's predictions, from the same forward passes
    class_names: str | None = None
    top_k: int = 10
    #: a folder of checkpoint files or a list of them (relative: inside the dataset folder),
    #: or hf: revisions: one embedding per checkpoint, recorded as a series
    checkpoints: str | list[str] | None = None
    series: str | None = None  #: the series' name (default <model>-checkpoints / -layers)


@dataclass
class TrainConfig:
    """The demo's training run (after ingest, before embed); keys are the options of
    ``embviz train``."""

    model: str = "cnn"  #: the only trainable model: the small digit CNN
    epochs: int = 4
    out: str = "checkpoints"  #: checkpoint folder; relative: inside the dataset folder
    seed: int = 0
    batch_size: int = 64
    lr: float = 0.002

    def __post_init__(self):
        if self.model != "cnn":
            raise ConfigError(
                f"train: model {self.model!r} cannot be trained here; valid models: ['cnn']"
            )
        if self.epochs < 1:
            raise ConfigError(f"train: epochs must be at least 1, got {self.epochs}")


@dataclass
class ReduceConfig:
    """One projection, or with ``series`` one per member of an embedding series; keys are the
    options of ``embviz reduce``."""

    method: str = "umap"
    dims: int = 2
    embedding: str | None = None
    pca: float | None = None
    sample: int = 100_000
    seed: int = 0
    fit_split: str | None = None
    fit_embedding: str | None = None
    fit_dataset: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    partition_rows: int = 1_000_000
    series: str | None = None  #: project every member of this embedding series, aligned
    align: str | None = None  #: with series: chain, independent or aligned-umap

    def __post_init__(self):
        single = ("embedding", "fit_split", "fit_embedding", "fit_dataset", "name")
        given = [k for k in single if getattr(self, k) is not None]
        if self.series is not None and given:
            raise ConfigError(f"reduce: {given[0]!r} applies to one embedding, not to a series")
        if self.series is None and self.align is not None:
            raise ConfigError("reduce: 'align' applies to a series; add 'series'")


@dataclass
class IndexConfig:
    """One neighbour index; keys are the options of ``embviz index``."""

    embedding: str | None = None  #: default the first embedding
    k: int = 10
    metric: str = "cosine"
    exact_below: int = 200_000
    seed: int = 0


@dataclass
class PredictConfig:
    """A classifier's predictions (``predictions`` table); keys are the options of
    ``embviz predict``."""

    source: str = "probe"  #: ``probe`` (on ``embedding``) or ``head`` (``model``'s classifier)
    embedding: str | None = None  #: default the first embedding
    model: str = "efficientnet_lite0"
    image_size: int | None = None
    batch_size: int = 64
    class_names: str | None = None  #: a file naming the head's logits
    k: int = 10
    folds: int = 5
    seed: int = 0


@dataclass
class ScoreConfig:
    """The per-sample scores; keys are the options of ``embviz score``."""

    embedding: str | None = None  #: default the first embedding
    k: int = 10
    clusters: int | None = None
    near_threshold: float | None = None
    pixel_check: bool | None = None
    label_method: str = "auto"
    seed: int = 0


@dataclass
class ClusterConfig:
    """Named clusters on the 2D maps; keys are the options of ``embviz cluster``."""

    projection: str | None = None  #: default every 2D projection
    levels: int = 3  #: 8, 32, 128 ... clusters, coarse to fine
    sizes: list[int] | None = None  #: clusters per level instead
    prompts: str | None = None  #: a text file of names to choose from (CLIP-like models)
    seed: int = 0


@dataclass
class Recipe:
    """A pipeline recipe for ``embviz build``: ingest, train, each embed, each reduce, each
    index, predict, score, cluster."""

    dataset: str
    source: SourceConfig
    name: str | None = None
    scheduler: str | None = None
    train: TrainConfig | None = None
    embed: list[EmbedConfig] = field(default_factory=list)
    reduce: list[ReduceConfig] = field(default_factory=list)
    index: list[IndexConfig] = field(default_factory=list)
    predict: PredictConfig | None = None
    score: ScoreConfig | None = None
    cluster: ClusterConfig | None = None


@dataclass
class ReportSettings:
    """Scheduled reports (``config/reports.yaml``): which dataset, where to, and when.

    Give exactly one of ``cron`` and ``period``.
    """

    dataset: str  #: dataset directory
    out_dir: str  #: folder of the dated reports and their index.html
    cron: str | None = None  #: cron expression, in UTC ("0 6 * * *": daily at 06:00)
    period: str | None = None  #: or a period: "30s", "15m", "6h", "1d", "1w", "1h30m"
    png: bool = False  #: also write the overview maps as PNG files
    title: str | None = None  #: report title (default "embviz report: <dataset name>")
    name: str | None = None  #: task name (default "embviz-report-<dataset name>")
    width: int = 900  #: overview map width in pixels
    height: int = 640  #: overview map height in pixels


_PERIOD_RE = re.compile(r"(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+(\.\d+)?s)?")


def check_schedule(*, cron: str | None, period: str | None, where: str) -> None:
    """Check that exactly one of ``cron`` / ``period`` is given and that it parses.

    ``period`` uses Panel's form (``1w``, ``2d``, ``6h``, ``15m``, ``30s``, combined in that
    order: ``1h30m``); ``cron`` needs the ``croniter`` package, as Panel's scheduler does.
    """
    if (cron is None) == (period is None):
        raise ConfigError(f"{where}: give exactly one of 'cron' and 'period'")
    if period is not None and (not period or not _PERIOD_RE.fullmatch(period)):
        raise ConfigError(
            f"{where}: period: {period!r} is not a period; use e.g. '30s', '15m', '6h', '1d', "
            "'1w' or '1h30m'"
        )
    if period is not None and not any(c.isdigit() and c != "0" for c in period):
        raise ConfigError(f"{where}: period: {period!r} is zero; give a positive period")
    if cron is not None:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ConfigError(
                f"{where}: cron: {cron!r} is not a cron expression; e.g. '0 6 * * *' (06:00 UTC)"
            )


def load_report_settings(path: str | Path) -> ReportSettings:
    """Load and validate a report settings file; a bad key raises :class:`ConfigError` naming it."""
    settings = from_mapping(ReportSettings, load_yaml(path), where=str(path))
    check_schedule(cron=settings.cron, period=settings.period, where=str(path))
    if settings.width < 16 or settings.height < 16:
        raise ConfigError(f"{path}: width and height must be at least 16 pixels")
    return settings


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; syntax errors name the file and line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc


def load_recipe(path: str | Path) -> Recipe:
    """Load and validate a recipe file; a bad key raises :class:`ConfigError` naming it."""
    return from_mapping(Recipe, load_yaml(path), where=str(path))


def from_mapping(cls: type[T], data: Any, *, where: str) -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and types recursively.

    ``where`` prefixes every message (a file name, then the dotted key path inside it).
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping for {cls.__name__}, found {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} in {cls.__name__}; valid keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{where}: {name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r} in {cls.__name__}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}"
        )
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where=where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, found {value!r}")
    return value
