"""Image batches for the ``embed`` step, decoded and preprocessed in threads ahead of the model."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["prepared_batches"]

#: Batches decoded ahead of the one the model is running.
_PREFETCH_BATCHES = 2


def _image_path(uri: str, root: Path) -> Path:
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    path = Path(uri)
    return path if path.is_absolute() else root / path


def _yield_to_model() -> None:
    """Lower this decode thread's priority so it fills idle cores, never slows the model's.

    On Linux a nice value is per thread. The model's intra-op threads synchronise at every
    operator, so one of them preempted by a decode thread stalls all of them; decoding is
    a small share of the work and finishes in the gaps.
    """
    # Not Linux, or not permitted: stay at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def prepared_batches(
    emb: Any, uris: Sequence[str], root: Path, batch_size: int, threads: int
) -> Iterator[tuple[int, list[tuple[Any, str | None]]]]:
    """Yield ``(start, [(tensor or None, error or None), ...])`` batches in order.

    A pool of ``threads`` decodes and preprocesses images up to ``_PREFETCH_BATCHES`` batches
    ahead, while the caller runs the model on the current batch (PIL and torch release the GIL).
    An image that does not decode gives ``(None, the error)`` in its place.

    Parameters
    ----------
    emb : the embedder; its ``prepare(image, source=path)`` makes the model's input tensor.
    uris : the images, in order (paths, ``file://`` URIs, relative ones under ``root``).
    root : the folder relative ``uris`` are in (the dataset's root).
    batch_size : images per yielded batch.
    threads : decode threads (they run at a lower priority than the model's).
    """
    from embviz.images import ImageError, open_image

    def load(uri: str) -> tuple[Any, str | None]:
        path = _image_path(uri, root)
        try:
            image = open_image(path)
        except ImageError as exc:
            return None, str(exc)
        return emb.prepare(image, source=path), None

    pool = ThreadPoolExecutor(
        max(1, threads), thread_name_prefix="embviz-decode", initializer=_yield_to_model
    )
    window: deque = deque()
    pos = 0

    def fill() -> None:
        nonlocal pos
        while pos < len(uris) and len(window) < batch_size * (_PREFETCH_BATCHES + 1):
            window.append(pool.submit(load, uris[pos]))
            pos += 1

    try:
        fill()
        start = 0
        while window:
            batch = [window.popleft().result() for _ in range(min(batch_size, len(window)))]
            fill()
            yield start, batch
            start += len(batch)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
