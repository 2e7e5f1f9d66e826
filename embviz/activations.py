"""What one layer of a model computes for one image: per-channel maps ranked by a score, cached beside the dataset.

:func:`activations` runs one forward pass (the embedder's own, through
:meth:`~embviz.models.base.Embedder.embed_batch`, which stops at the layer) and ranks the
channels of a map layer by :func:`peak_focus`, or the neurons of a pooled or linear layer by
their value; :func:`mosaic` draws the top channels as a grid of small heatmaps and
:func:`channel_overlay` lays one channel over the image, on the receptive fields of its cells.
:class:`ActivationCache` keeps the results of a dataset's samples under ``cache/activations/``
(derived data, safe to delete).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DatasetError, ModelError

if TYPE_CHECKING:
    from .dataset import Dataset
    from .models.base import Embedder

__all__ = ["ActivationCache", "Activations", "activations", "channel_overlay", "dataset_model"]
__all__ += ["layer_kind", "mosaic", "peak_focus"]


@dataclass(frozen=True)
class Activations:
    """One layer's output for one image.

    Attributes
    ----------
    layer : the module (or ``pooled``).
    shape : the layer's output shape without the batch axis, as the model gives it (ViT tokens
        ``(T, C)`` included).
    kind : ``maps`` (``values`` is ``(C, H, W)``) or ``vector`` (``values`` is ``(D,)``).
    values : float32 activations; tokens are already a grid (:func:`embviz.saliency.vit_reshape`).
    order : channel (or neuron) indices, highest score first.
    scores : float32 score of each channel, by channel index: :func:`peak_focus` for maps, the
        activation itself for a vector.
    seconds : wall time of the computation (preprocessing and scoring included).
    box : ``(left, top, right, bottom)`` in the image's pixels: the crop the model saw, which
        every map covers.
    shift : pixels (at the model's input size) to move an upsampled map down and right so its
        cells sit on their receptive fields (:func:`embviz.saliency.alignment`); 0 for vectors.
    input_size : ``(height, width)`` of the model's input.
    """

    layer: str
    shape: tuple[int, ...]
    kind: str
    values: np.ndarray
    order: np.ndarray
    scores: np.ndarray
    seconds: float
    box: tuple[float, float, float, float]
    shift: float
    input_size: tuple[int, int]


def layer_kind(shape: tuple[int, ...]) -> str | None:
    """``maps``, ``vector`` or None (not shown) for a layer's output ``shape`` without the batch.

    ``(C, H, W)`` are maps, unless ``H = W = 1`` (a squeezed vector); ``(T, C)`` transformer
    tokens are maps too, as the grid of their patches (a single token is a vector); ``(D,)`` is
    a vector. Other shapes are None.
    """
    if len(shape) == 1 or (len(shape) == 3 and shape[1] * shape[2] == 1):
        return "vector"
    if len(shape) == 3 or (len(shape) == 2 and shape[0] >= 4):
        return "maps"
    return "vector" if len(shape) == 2 and shape[0] == 1 else None


def peak_focus(maps: np.ndarray) -> np.ndarray:
    """The "peak x focus" score of each channel of ``maps`` ``(C, H, W)``, float32 ``(C,)``.

    ``peak`` is the channel's largest activation (0 when it never fires); ``focus`` is one minus
    the entropy of its positive part spread over the ``H x W`` cells, divided by the entropy of
    a uniform spread (``log(H W)``): 1 when one cell holds all of it, 0 when all cells fire
    alike. The product puts first the channels that fire strongly AND in one place, the ones
    whose map says *where* the image triggered them. Magnitude alone ranks first the channels
    that respond to the whole image (colour, overall texture, a bias): bright, flat maps that
    point at nothing; focus alone ranks first channels with one faintly positive cell. The old
    dashboard's entropy times magnitude is the same idea.
    """
    maps = np.asarray(maps, dtype=np.float64)
    flat = np.clip(maps.reshape(len(maps), -1), 0.0, None)
    peak = flat.max(axis=1, initial=0.0)
    total = flat.sum(axis=1, keepdims=True)
    p = np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    cells = flat.shape[1]
    focus = 1.0 - entropy / math.log(cells) if cells > 1 else np.ones(len(flat))
    return (peak * np.where(peak > 0, focus, 0.0)).astype(np.float32)


def activations(embedder: Embedder, image, layer: str, *, source: Any = None) -> Activations:
    """The output of ``layer`` for PIL RGB ``image``, its channels ranked.

    Parameters
    ----------
    embedder : the model (:func:`embviz.models.cached_embedder`); its forward pass is shared
        with embedding and search and taken one at a time (the embedder's lock).
    image : the decoded image (:func:`embviz.images.open_image`).
    layer : a name from ``embedder.layers()`` whose output :func:`layer_kind` shows.
    source : names the image (its file) in errors.

    Raises :class:`~embviz.errors.ModelError` naming the model and the layer when the model has
    no such layer or its output is neither maps nor a vector, or the image cannot be preprocessed.
    """
    import torch

    from .saliency import alignment, crop_box, network, vit_reshape

    started = time.perf_counter()
    embedder.check_layers([layer])
    x = embedder.prepare(image, source=source).unsqueeze(0)
    seen: list[tuple[int, ...]] = []

    def keep(tensor):  # the layer's own shape, before embed_batch flattens it
        seen.append(tuple(tensor.shape[1:]))
        return tensor.flatten(1)

    flat = embedder.embed_batch(x, [layer], keep)[layer][0]
    shape = seen[0] if seen else tuple(flat.shape)
    kind = layer_kind(shape)
    if kind is None:
        raise ModelError(
            f"model {embedder.name!r}, layer {layer!r}: its output {shape} is neither maps "
            "(C, H, W), tokens (T, C) nor a vector (D,); pick another layer"
        )
    values = flat.reshape(shape).astype(np.float32)
    shift = 0.0
    if kind == "maps" and len(shape) == 2:
        values = vit_reshape(torch.from_numpy(values)[None])[0].numpy()
    if kind == "maps":
        scores = peak_focus(values)
        net, lock, shifts = network(embedder)
        with lock:  # the CAM copy's hooks, one caller at a time; cached per layer and size
            key = (layer, tuple(x.shape))
            if key not in shifts:
                shifts[key] = alignment(net, layer, x.to(embedder.device))
            shift = float(shifts[key])
    else:
        values = values.reshape(-1)
        scores = values.copy()
    return Activations(
        layer=layer,
        shape=tuple(int(s) for s in shape),
        kind=kind,
        values=values,
        order=np.argsort(-scores, kind="stable").astype(np.int64),
        scores=scores,
        seconds=time.perf_counter() - started,
        box=tuple(float(v) for v in crop_box(embedder.transform, *image.size)),
        shift=shift,
        input_size=(int(x.shape[2]), int(x.shape[3])),
    )


def _fire() -> np.ndarray:
    """colorcet's ``fire`` as a uint8 ``(256, 3)`` lookup table (the saliency overlay's colours)."""
    import colorcet

    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colorcet.fire], np.uint8)


def _unit(channel: np.ndarray) -> np.ndarray:
    """A map's positive part divided by its own maximum (all zero when it never fires)."""
    pos = np.clip(np.asarray(channel, dtype=np.float32), 0.0, None)
    peak = float(pos.max()) if pos.size else 0.0
    return pos / peak if peak > 0 else pos


def mosaic(acts: Activations, *, top: int = 64, cols: int = 8, cell: int = 48, gap: int = 2):
    """The ``top`` highest-scoring channels of a maps layer as a grid of small heatmaps.

    Each map is normalised to its own maximum (so a weak channel's layout still shows; the
    ranking says which are strong), enlarged to ``cell`` pixels without smoothing (each cell of
    the map stays visible) and coloured with colorcet's ``fire``. Cells go left to right, then
    down, best first; each takes ``cell + gap`` pixels (the gap white, right and below it), so
    pixel ``(x, y)`` is cell ``(y // (cell + gap)) * cols + x // (cell + gap)``.

    Returns ``(PIL RGB image, channel ids in cell order)``. ValueError for a vector layer (it is
    drawn as one strip of ``acts.values[acts.order]``).
    """
    from PIL import Image

    if acts.kind != "maps":
        raise ValueError(f"layer {acts.layer!r} is a vector {acts.shape}: it has no maps to tile")
    chosen = [int(c) for c in acts.order[: max(1, int(top))]]
    cols = max(1, min(int(cols), len(chosen)))
    rows = math.ceil(len(chosen) / cols)
    pitch = cell + gap
    _, h, w = acts.values.shape
    ri, ci = np.arange(cell) * h // cell, np.arange(cell) * w // cell
    maps = np.stack([_unit(acts.values[c]) for c in chosen])[:, ri][:, :, ci]
    tiles = _fire()[np.round(maps * 255).astype(np.uint8)]  # (n, cell, cell, 3)
    canvas = np.full((rows * pitch, cols * pitch, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * pitch : r * pitch + cell, c * pitch : c * pitch + cell] = tile
    return Image.fromarray(canvas), chosen


def channel_overlay(image, acts: Activations, channel: int, alpha: float = 1.0, *, size=None):
    """Channel ``channel`` of ``acts`` coloured over PIL ``image`` (which ``acts`` was computed
    for), as a PIL RGB image: the map normalised to its maximum, enlarged to the model's input
    size, moved onto its receptive fields (``acts.shift``) and laid over the crop the model saw
    (:func:`embviz.saliency.overlay`; outside it the zero colour). ``alpha``: weight of the
    colour (1: the map alone, to be blended by the page). ``size``: ``(width, height)`` of the
    result; default the image's aspect with its longer side 448 px (a detail panel's width).
    """
    from PIL import Image

    from .saliency import overlay

    if acts.kind != "maps":
        raise ValueError(f"layer {acts.layer!r} is a vector {acts.shape}: no map to overlay")
    if not 0 <= int(channel) < len(acts.values):
        raise ValueError(
            f"layer {acts.layer!r} has channels 0-{len(acts.values) - 1}, not {channel}"
        )
    h, w = acts.input_size
    big = Image.fromarray(_unit(acts.values[int(channel)])).resize((w, h), Image.BILINEAR)
    rows, cols = (np.arange(n) - round(acts.shift) for n in (h, w))
    cam = np.asarray(big)[np.ix_(rows.clip(0, h - 1), cols.clip(0, w - 1))]
    if size is None:
        k = 448 / max(image.size)
        size = (max(1, round(image.size[0] * k)), max(1, round(image.size[1] * k)))
    return overlay(image, cam, alpha=alpha, size=size, box=acts.box)


def dataset_model(ds: Dataset, embedding: str | None = None) -> tuple[str, int | None]:
    """``(model, image_size)`` whose activations a dataset's explorer shows: the model of the
    classifier that made its predictions (their embedding's, or the head's), else that of
    ``embedding`` (a name under ``embeddings/``, as the explorer lists them).

    Raises :class:`DatasetError` when neither names a model (vectors given, not embedded).
    """
    if ds.has("predictions"):
        meta = ds.meta("predictions")
        if meta.get("source", "probe") == "probe" and ds.has(str(meta.get("embedding"))):
            emb = ds.meta(str(meta["embedding"]))
            if emb.get("model"):
                return str(emb["model"]), emb.get("image_size")
        elif meta.get("model"):
            return str(meta["model"]), meta.get("result", {}).get("image_size")
    key = f"embeddings/{embedding}"
    if embedding and ds.has(key) and ds.meta(key).get("model"):
        return str(ds.meta(key)["model"]), ds.meta(key).get("image_size")
    raise DatasetError(
        f"{ds.root}: no model recorded for embedding {embedding!r}; activations need an "
        "embedding made by 'embviz embed' (vectors given from outside have no model)"
    )


class ActivationCache:
    """Activations of a dataset's samples under one model, computed once and kept as
    ``cache/activations/<digest>.npz`` by sample, model, image size and layer (and the samples
    table's version, so a re-ingest never shows stale maps).

    Entries are written to a temporary file and renamed into place: a reader sees a whole
    entry or none; one that cannot be read (torn by a crash, an older format) is computed
    again and replaced. A read-only dataset computes without keeping anything.

    Parameters
    ----------
    ds : the dataset.
    model, image_size : as recorded with its embedding (see :func:`dataset_model`).
    device : where the model runs (``auto``: a GPU when there is one).
    """

    def __init__(self, ds: Dataset, model: str, *, image_size: int | None = None, device="auto"):
        self.ds, self.model, self.image_size, self.device = ds, model, image_size, device

    def embedder(self) -> Embedder:
        """The model, loaded once per process (:func:`embviz.models.cached_embedder`)."""
        from .models import cached_embedder

        return cached_embedder(self.model, image_size=self.image_size, device=self.device)

    def image(self, sample_id: int):
        """The sample's image (PIL RGB); :class:`DatasetError` naming the sample and its file
        when the sample is unknown or its image is gone or unreadable."""
        from .images import open_image

        uri = self.ds.read_ids("samples", [int(sample_id)], ["uri"])
        if not uri.num_rows:
            raise DatasetError(f"{self.ds.root}: no sample {sample_id}")
        path = Path(str(uri.column("uri")[0].as_py()))
        path = path if path.is_absolute() else self.ds.root / path
        try:
            return open_image(path)
        except Exception as exc:
            raise DatasetError(
                f"sample {sample_id}: cannot read its image {path} ({exc})"
            ) from None

    def path(self, sample_id: int, layer: str) -> Path:
        """Where the entry of ``(sample_id, layer)`` lives (it may not exist)."""
        version = self.ds.table("samples")["dir"]
        key = "|".join(map(str, (version, int(sample_id), self.model, self.image_size, layer)))
        digest = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
        return self.ds.root / "cache" / "activations" / f"{digest}.npz"

    def get(self, sample_id: int, layer: str, *, image=None, cache: bool = True) -> Activations:
        """The activations of ``layer`` for ``sample_id``: the cached entry, else computed
        (from ``image`` when given, else the sample's file) and kept. ``cache=False`` neither
        reads nor writes the cache. Raises as :meth:`image` and :func:`activations` do."""
        path = self.path(sample_id, layer)
        if cache and path.exists():
            found = _read(path)
            if found is not None and found.layer == layer:
                return found
        if image is None:
            image = self.image(sample_id)
        acts = activations(self.embedder(), image, layer, source=f"sample {sample_id}")
        if cache:
            _write(path, acts)
        return acts


def _write(path: Path, acts: Activations) -> None:
    fields = {k: np.asarray(getattr(acts, k)) for k in Activations.__dataclass_fields__}
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.savez(fh, **fields)
        os.replace(tmp, path)
    except OSError:  # a read-only dataset: the result is still returned, just not kept
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> Activations | None:
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            return Activations(
                layer=str(z["layer"]),
                shape=tuple(int(v) for v in z["shape"]),
                kind=str(z["kind"]),
                values=z["values"].astype(np.float32),
                order=z["order"].astype(np.int64),
                scores=z["scores"].astype(np.float32),
                seconds=float(z["seconds"]),
                box=tuple(float(v) for v in z["box"]),
                shift=float(z["shift"]),
                input_size=tuple(int(v) for v in z["input_size"]),
            )
    except Exception:  # torn, truncated or another format: computed again and replaced
        return None
