"""Run a recipe end to end: ingest, train, embed, reduce, index, predict, score and cluster steps."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embviz.config import Recipe, load_recipe

__all__ = ["BuildResult", "build"]


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: the dataset path, the step results in order, and the time taken."""

    dataset: Path
    steps: list[Any]
    seconds: float


def build(
    recipe: Recipe | str | Path,
    *,
    dataset: str | Path | None = None,
    scheduler: str | Any | None = None,
    progress: bool = True,
) -> BuildResult:
    """Run ``recipe`` (a :class:`Recipe` or the path of its YAML file).

    ``dataset`` overrides the recipe's output directory and ``scheduler`` its Dask scheduler.
    Every step is resumable: re-running a build after a crash redoes only what was unfinished
    (embedding partitions already written are kept).
    """
    from .cluster import cluster
    from .embed import embed
    from .index import index
    from .ingest import ingest
    from .predict import predict
    from .reduce import reduce
    from .score import score

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    t0 = time.time()
    out = Path(dataset or recipe.dataset)
    scheduler = scheduler if scheduler is not None else recipe.scheduler
    source = dataclasses.asdict(recipe.source)
    if source["kind"] == "mnist":
        from .demo import write_mnist_folder

        source["path"] = str(write_mnist_folder(source["path"], limit=source["limit"] or 5000))
        source.update(kind="folder", limit=None)
    source_path = source.pop("path")
    steps: list[Any] = [
        ingest(out, source=source_path, name=recipe.name, progress=progress, **source)
    ]
    if recipe.train is not None:  # before embed: its checkpoints are embedded as a series
        from .train_demo import train_cnn

        opts = dataclasses.asdict(recipe.train)
        opts.pop("model")  # "cnn": TrainConfig checks it
        steps.append(train_cnn(out, opts.pop("out"), progress=progress, **opts))
    for opts in recipe.embed:
        steps.append(embed(out, scheduler=scheduler, progress=progress, **dataclasses.asdict(opts)))
    for opts in recipe.reduce:
        kwargs = dataclasses.asdict(opts)
        series = kwargs.pop("series")
        if series is None:
            kwargs.pop("align")
            steps.append(reduce(out, scheduler=scheduler, progress=progress, **kwargs))
            continue
        from .reduce_series import reduce_series

        for key in ("embedding", "fit_split", "fit_embedding", "fit_dataset", "name"):
            kwargs.pop(key)  # None: ReduceConfig refuses them with a series
        steps.append(reduce_series(out, series, scheduler=scheduler, progress=progress, **kwargs))
    for opts in recipe.index:
        steps.append(index(out, progress=progress, **dataclasses.asdict(opts)))
    if recipe.predict is not None:  # before score: label issues use its probabilities
        opts = dataclasses.asdict(recipe.predict)
        steps.append(predict(out, scheduler=scheduler, progress=progress, **opts))
    if recipe.score is not None:
        steps.append(score(out, progress=progress, **dataclasses.asdict(recipe.score)))
    if recipe.cluster is not None:  # last: names clusters on the maps, reads the labels
        steps.append(cluster(out, **dataclasses.asdict(recipe.cluster)))
    return BuildResult(dataset=out, steps=steps, seconds=time.time() - t0)
