"""A model's layers as the layer picker sees them, and the job that embeds and maps one of them.

The picker's blocks (:func:`layer_blocks`), the embeddings already made like the session's
(:func:`model_spec`, :func:`layer_embedding`), and the job. The app never imports the
pipeline: the job runs the very commands shown to people whose dataset is too large to embed
inside the server (:func:`job_commands`), as ``python -m embviz.pipeline.cli``, and reads their
progress bars from stderr. One job per dataset runs in a process at a time; the embed step is
resumable, so a stopped job loses at most the partition it was on.
"""

from __future__ import annotations

import atexit
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from embviz.dataset import slugify
from embviz.models import model_slug

__all__ = [
    "CLI",
    "JobRunning",
    "JobState",
    "LayerJob",
    "ModelSpec",
    "command_line",
    "job_commands",
    "layer_blocks",
    "layer_embedding",
    "model_spec",
    "running_job",
    "shape_text",
    "start_job",
]

#: The module the job runs: the ``embviz`` console script's own entry point.
CLI = "embviz.pipeline.cli"
#: A tqdm progress line's count: "embed m:  40%|####  | 48/120 [00:01<00:01, 90.2img/s]".
_COUNT = re.compile(r"\|\s*(\d+)/(\d+) \[")
#: Blocks of a readable diagram: fewer and it is expanded one level, more and it is not.
FEWEST_BLOCKS, MOST_BLOCKS = 6, 24
POOLED = "pooled"  # the Embedder's name for the pre-logits features (embviz.models.base)


def layer_blocks(
    layers: list[tuple[str, tuple[int, ...]]],
    *,
    fewest: int = FEWEST_BLOCKS,
    most: int = MOST_BLOCKS,
) -> list[tuple[str, tuple[int, ...]]]:
    """The blocks of a model diagram, in model order, as ``(layer, output shape)``.

    ``layers`` is :meth:`Embedder.layers` (``pooled`` first, then the named modules in
    definition order). The blocks start as the top-level modules; a container that produced
    no output of its own (a ``ModuleList``) is replaced by its children, a stage container
    whose children are numbered (``blocks`` -> ``blocks.0`` ... ``blocks.6``) is expanded once,
    while the diagram stays within ``most`` blocks; with fewer than ``fewest`` the biggest block
    is expanded. ``pooled`` goes after the last block with a multi-dimensional output (it is
    the pooled feature map or token sequence), or last.
    """
    shapes = dict(layers)
    children: dict[str, list[str]] = {}
    for name, _ in layers:
        if name == POOLED:
            continue
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            parent, node = ".".join(parts[: depth - 1]), ".".join(parts[:depth])
            kids = children.setdefault(parent, [])
            if node not in kids:
                kids.append(node)

    def size(node: str) -> int:
        return sum(1 for n in shapes if n == node or n.startswith(node + "."))

    def numbered(node: str) -> bool:
        kids = children.get(node, [])
        return bool(kids) and all(k.rsplit(".", 1)[-1].isdigit() for k in kids)

    blocks = list(children.get("", []))
    while True:
        grow = [b for b in blocks if b in children and b not in shapes]  # no output: must open
        if not grow:
            grow = [
                b
                for b in blocks
                if numbered(b)
                and not b.rsplit(".", 1)[-1].isdigit()
                and len(blocks) - 1 + len(children[b]) <= most
            ]
        if not grow and len(blocks) < fewest:
            fits = [b for b in blocks if len(blocks) - 1 + len(children.get(b, [])) <= most]
            grow = sorted((b for b in fits if len(children.get(b, [])) > 1), key=size)[-1:]
        if not grow:
            break
        i = blocks.index(grow[0])
        blocks[i : i + 1] = children[grow[0]]
    out = [(b, tuple(shapes[b])) for b in blocks if b in shapes]
    if POOLED in shapes:
        deep = [i for i, (_, shape) in enumerate(out) if len(shape) > 1]
        at = deep[-1] + 1 if deep else len(out)
        out.insert(at, (POOLED, tuple(shapes[POOLED])))
    return out


def shape_text(shape: tuple[int, ...]) -> str:
    """``(192, 4, 4)`` -> ``192×4×4``: a layer's output shape as the diagram writes it."""
    return "×".join(str(int(s)) for s in shape)


@dataclass(frozen=True)
class ModelSpec:
    """The model behind an embedding, as its embed step was run.

    Attributes
    ----------
    model, image_size, reshape : the embed step's ``--model``, ``--image-size``, ``--reshape``.
    prefix : the tables' name prefix (``<prefix>.<layer>``); the model's slug unless ``--name``.
    layer : the layer of the embedding it was read from.
    """

    model: str
    image_size: int | None
    reshape: str
    prefix: str
    layer: str

    @property
    def key(self) -> tuple[str, int | None]:
        """``(model, image_size)``: what the layers' shapes depend on."""
        return self.model, self.image_size


def model_spec(ds, embedding: str) -> ModelSpec | None:
    """The :class:`ModelSpec` of ``embedding``, else of the dataset's first embedding made by a
    model; None when none was (vectors given by the user)."""
    for name in [embedding, *ds.embeddings]:
        key = f"embeddings/{name}"
        meta = ds.meta(key) if ds.has(key) else {}
        if meta.get("model") and meta.get("layer"):
            layer = str(meta["layer"])
            return ModelSpec(
                model=str(meta["model"]),
                image_size=meta.get("image_size"),
                reshape=str(meta.get("reshape") or "mean"),
                prefix=name.removesuffix("." + slugify(layer)),
                layer=layer,
            )
    return None


def layer_embedding(ds, spec: ModelSpec, layer: str, *, prefer=()) -> str | None:
    """The dataset's embedding of ``layer`` made like ``spec`` (same model and image size), the
    first of ``prefer`` (e.g. the current one, then those with maps) when several; or None."""
    found = [
        name
        for name in ds.embeddings
        if (m := ds.meta(f"embeddings/{name}")).get("model") == spec.model
        and m.get("image_size") == spec.image_size
        and m.get("layer") == layer
    ]
    rank = {name: i for i, name in enumerate(prefer)}
    found.sort(key=lambda n: rank.get(n, len(rank)))
    return found[0] if found else None


def job_commands(
    dataset: str | Path, spec: ModelSpec, layer: str, *, method: str = "umap"
) -> list[list[str]]:
    """The ``embviz`` arguments (without ``embviz``) that embed ``layer`` of ``dataset`` (made
    absolute: the lines work from any folder) like ``spec``, then map it in 2D with ``method``:
    ``umap`` (after PCA to 50 dimensions, as the demo recipe does) or ``pca``."""
    root = str(Path(dataset).resolve())
    embed = ["embed", root, "--model", spec.model, "--layer", layer]
    if spec.image_size:
        embed += ["--image-size", str(int(spec.image_size))]
    if spec.reshape != "mean":
        embed += ["--reshape", spec.reshape]
    if spec.prefix != model_slug(spec.model):
        embed += ["--name", spec.prefix]
    embedding = f"{spec.prefix}.{slugify(layer)}"
    reduce = ["reduce", root, "--embedding", embedding, "--method", method, "--dims", "2"]
    if method == "umap":
        reduce += ["--pca", "50"]
    return [embed, reduce]


def command_line(args: list[str]) -> str:
    """One shell line ``embviz ...`` for ``args``, quoted so it can be pasted as is."""
    return shlex.join(["embviz", *args])


@dataclass
class JobState:
    """Where a job stands: command ``step`` of ``steps`` (named ``phase``: embed, reduce) has
    counted ``done`` of ``total`` (0: no count yet); ``status`` is running, done, failed or
    stopped; ``last_line`` is the last line the commands wrote to stderr (the error, if any)."""

    step: int = 0
    steps: int = 0
    phase: str = ""
    done: int = 0
    total: int = 0
    status: str = "running"
    last_line: str = ""

    def describe(self, layer: str, method: str) -> str:
        """One line on where the job on ``layer`` stands ("step 1/2: embedding x: 48/120
        images"), "" once it ended."""
        if self.status != "running":
            return ""
        what = f"embedding {layer}" if self.phase == "embed" else f"mapping {layer} ({method})"
        unit = "images" if self.phase == "embed" else "rows"
        count = f": {self.done:,}/{self.total:,} {unit}" if self.total else "…"
        return f"step {self.step}/{self.steps}: {what}{count}"


class JobRunning(RuntimeError):
    """A job is already running on this dataset in this process (``job`` is that one)."""

    def __init__(self, job: LayerJob):
        super().__init__(f"a job is already running on this dataset: {job.title}")
        self.job = job


class LayerJob:
    """The commands ``args`` run one after another in a thread of their own; see :func:`start_job`.

    ``listener(state)`` is called from that thread with a copy of :attr:`state` on every
    progress update and once at the end (``state.status`` no longer ``running``).
    """

    def __init__(self, key: str, args: list[list[str]], title: str, listener):
        self.key = key
        self.args = [list(a) for a in args]
        self.title = title
        self.state = JobState(steps=len(args))
        self._listener = listener
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="embviz-layer-job", daemon=True)

    def stop(self) -> None:
        """Stop the job: the running command is terminated (embed resumes where it stopped)."""
        with self._lock:
            self._stopped = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def start(self) -> None:
        """Start the commands (once); :func:`start_job` does, after registering the job."""
        self._thread.start()

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the job ends (or ``timeout`` seconds); returns its state."""
        self._thread.join(timeout)
        return self.state

    def _notify(self) -> None:
        try:
            self._listener(replace(self.state))  # a snapshot: the thread goes on
        except Exception:  # a closed page's panel must not stop the job
            import logging

            logging.getLogger(__name__).exception("layer job listener failed")

    def _run(self) -> None:
        try:
            for i, args in enumerate(self.args, 1):
                self.state.step, self.state.phase = i, args[0]
                self.state.done = self.state.total = 0
                self._notify()
                if not self._run_one(args):
                    break
            else:
                self.state.status = "done"
        except Exception as exc:  # no Python, no pipe: reported like a failed command
            self.state.status, self.state.last_line = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            with _JOBS_LOCK:
                if _JOBS.get(self.key) is self:
                    del _JOBS[self.key]
            self._notify()

    def _run_one(self, args: list[str]) -> bool:
        with self._lock:
            if self._stopped:
                self.state.status = "stopped"
                return False
            # stdout carries the step's JSON summary only; stderr its progress bars and errors.
            self._proc = proc = subprocess.Popen(
                [sys.executable, "-m", CLI, *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        with proc:  # closes the pipe and waits for the command on the way out
            tail = b""
            while chunk := proc.stderr.read1(4096):
                *lines, tail = re.split(rb"[\r\n]", tail + chunk)
                self._read(lines)
            self._read([tail])
        code = proc.returncode
        if code == 0:
            return True
        self.state.status = "stopped" if self._stopped else "failed"
        if not self.state.last_line:
            self.state.last_line = f"embviz {args[0]} exited with status {code}"
        return False

    def _read(self, lines: list[bytes]) -> None:
        counted = False
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            self.state.last_line = line
            found = _COUNT.search(line)
            if found:
                self.state.done, self.state.total = int(found[1]), int(found[2])
                counted = True
        if counted:
            self._notify()


#: The running job of each dataset (resolved folder) in this process.
_JOBS: dict[str, LayerJob] = {}
_JOBS_LOCK = threading.Lock()


def _key(dataset: str | Path) -> str:
    return str(Path(dataset).resolve())


def running_job(dataset: str | Path) -> LayerJob | None:
    """The job running on ``dataset`` in this process, or None."""
    with _JOBS_LOCK:
        return _JOBS.get(_key(dataset))


def start_job(
    dataset: str | Path,
    args: list[list[str]],
    *,
    title: str,
    listener: Callable[[JobState], None],
) -> LayerJob:
    """Run the ``embviz`` commands ``args`` (from :func:`job_commands`) on ``dataset`` in the
    background and return the job; ``listener(state)`` hears its progress and its end.

    Raises :class:`JobRunning` when a job is already running on ``dataset`` in this process.
    """
    key = _key(dataset)
    with _JOBS_LOCK:
        if key in _JOBS:
            raise JobRunning(_JOBS[key])
        job = _JOBS[key] = LayerJob(key, args, title, listener)
    job.start()
    return job


@atexit.register
def _stop_all() -> None:
    # A server that exits takes its jobs' commands with it rather than leaving them orphaned.
    with _JOBS_LOCK:
        jobs = list(_JOBS.values())
    for job in jobs:
        job.stop()
