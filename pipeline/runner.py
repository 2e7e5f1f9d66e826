"""Run a step's per-partition tasks in this process or on a Dask distributed cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["cluster_client", "run_tasks"]


@contextlib.contextmanager
def cluster_client(scheduler: str | Any | None) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``scheduler`` (an address or a Client), or None.

    A Client passed in is used as is and left open; an address is connected to and closed after.
    """
    if scheduler is None or scheduler == "":
        yield None
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    client = Client(scheduler, set_as_default=False)
    try:
        yield client
    finally:
        client.close()


def run_tasks(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *,
    scheduler: str | Any | None = None,
    desc: str = "tasks",
    unit: str = "part",
    progress: bool = True,
    weights: Sequence[int] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Call ``fn(item, **kwargs)`` for each item; return results in item order.

    Locally the calls run one after another in this process (each task is expected to use the
    machine's cores itself, e.g. a torch forward or decode threads). With ``scheduler`` they are
    submitted to the Dask cluster, one task per item; a task lost with its worker is retried
    there. ``weights`` (e.g. rows per partition) drive the progress bar's rate and ETA.
    """
    from tqdm.auto import tqdm

    weights = list(weights) if weights is not None else [1] * len(items)
    results: list[Any] = [None] * len(items)
    bar = tqdm(total=sum(weights), desc=desc, unit=unit, disable=not progress, smoothing=0.1)
    try:
        with cluster_client(scheduler) as client:
            if client is None:
                for i, item in enumerate(items):
                    results[i] = fn(item, **kwargs)
                    bar.update(weights[i])
            else:
                from distributed import as_completed

                futures = {
                    client.submit(fn, item, pure=False, retries=2, **kwargs): i
                    for i, item in enumerate(items)
                }
                # The client's own loop: a Client made from an address is not the process's
                # default client, and as_completed would look for one ("No clients found").
                for fut in as_completed(futures, loop=client.loop):
                    i = futures[fut]
                    results[i] = fut.result()
                    bar.update(weights[i])
    finally:
        bar.close()
    return results
