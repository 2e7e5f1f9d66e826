"""The shared Embedder: a loaded model with its preprocessing, layer hooks and batched forward."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelError

__all__ = [
    "POOLED",
    "Embedder",
    "first_tensor",
    "imagenet_classes",
    "resolve_device",
    "seeded",
    "sha256_file",
]

#: Key of the model's own output among a full pass's captured tensors.
_OUTPUT = "\x00output"
#: Name of the pooled pre-logits features every embedder offers as its default layer.
POOLED = "pooled"


def resolve_device(device: str | None) -> str:
    """``"auto"`` (or None) -> ``"cuda"`` when a GPU is available, else ``"cpu"``."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Make random weight initialisation inside the block repeatable, without touching the caller's RNG.

    Random-weight models (benchmarks, tests) then hash the same in every process, so resumed and
    distributed runs agree with each other.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def sha256_file(*paths: str | Path) -> str:
    """Hex sha256 over the bytes of ``paths`` in order."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names in logit order (shipped with torchvision: no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def first_tensor(output: Any):
    """The tensor a module produced: itself, ``last_hidden_state``, or the first tensor inside.

    Hugging Face modules return ``ModelOutput`` objects or tuples; timm and torchvision return
    tensors. Returns None when the output holds no tensor.
    """
    import torch

    if isinstance(output, torch.Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, list | tuple):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


class _Enough(Exception):
    """Raised from a hook once every requested layer is captured, to skip the rest of forward."""


class Embedder:
    """A model ready to turn preprocessed image batches into per-layer feature vectors.

    Family loaders (``embviz.models.<family>``) build it; use :func:`embviz.models.get_embedder`.

    Parameters
    ----------
    name:
        The model name as the user gave it (``efficientnet_lite0``, ``timm:resnet18`` ...).
    model:
        The ``torch.nn.Module``; moved to ``device`` and put in eval mode.
    transform:
        ``PIL RGB image -> float tensor (3, H, W)``.
    device:
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
    pooled_module:
        Name of the final classifier module; its *input* is the ``pooled`` layer. Use this or
        ``pooled_from_output``.
    pooled_from_output:
        ``forward output -> (n, d) tensor`` giving the ``pooled`` layer.
    forward:
        ``(model, batch) -> output``; default ``model(batch)``.
    weights_files:
        Files holding the weights, hashed for :attr:`weights_sha256`; when empty the state
        dict's bytes are hashed instead.
    class_names:
        The names of the model's output classes in logit order, when its forward returns
        class logits (ImageNet's for ImageNet classifiers); None when unknown or headless.
    """

    def __init__(
        self,
        *,
        name: str,
        model: Any,
        transform: Callable[[Any], Any],
        device: str = "auto",
        pooled_module: str | None = None,
        pooled_from_output: Callable[[Any], Any] | None = None,
        forward: Callable[[Any, Any], Any] | None = None,
        weights_files: Sequence[str | Path] = (),
        image_size: int | None = None,
        class_names: Sequence[str] | None = None,
    ):
        if (pooled_module is None) == (pooled_from_output is None):
            raise ValueError("give exactly one of pooled_module and pooled_from_output")
        self.name = name
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.transform = transform
        self.image_size = image_size
        self.default_layer = POOLED
        self.class_names = list(class_names) if class_names is not None else None
        self._pooled_module = pooled_module
        self._pooled_from_output = pooled_from_output
        self._forward = forward or (lambda m, x: m(x))
        self._weights_files = [Path(p) for p in weights_files]
        self._sha: str | None = None
        self._layers: list[tuple[str, tuple[int, ...]]] | None = None
        self._modules = dict(model.named_modules())
        # Layer hooks live on the shared model: one forward pass at a time per embedder, so
        # threads (explorer sessions) never capture each other's activations.
        self._forward_lock = threading.Lock()
        if pooled_module is not None and pooled_module not in self._modules:
            raise ModelError(f"{name}: model has no module {pooled_module!r} to pool from")

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, device={self.device!r})"

    @property
    def weights_sha256(self) -> str:
        """sha256 of the weight file(s), or of the state dict's tensor bytes when there is none."""
        if self._sha is None:
            if self._weights_files:
                self._sha = sha256_file(*self._weights_files)
            else:
                import torch

                h = hashlib.sha256()
                for key, tensor in self.model.state_dict().items():
                    h.update(key.encode())
                    flat = tensor.detach().cpu().contiguous().view(-1)
                    h.update(flat.view(torch.uint8).numpy().tobytes())
                self._sha = h.hexdigest()
        return self._sha

    def preprocess(self, image) -> Any:
        """``PIL RGB image -> float32 tensor (3, H, W)`` ready for :meth:`embed_batch`."""
        return self.transform(image)

    def prepare(self, image, *, source: Any = None) -> Any:
        """:meth:`preprocess`, failing with a :class:`ModelError` that names ``source`` (the
        image's file or upload) when the model's transform rejects the image."""
        try:
            return self.preprocess(image)
        except Exception as exc:
            raise ModelError(
                f"{source or 'image'}: model {self.name!r} cannot preprocess this image "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def embed_images(
        self,
        images: Sequence[Any],
        layers: Sequence[str] = (POOLED,),
        reshape: Any = "mean",
        *,
        sources: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Embed decoded RGB images exactly as ``embviz embed`` does: :meth:`prepare` each one,
        then one :meth:`embed_batch`. Returns ``{layer: float32 ndarray (n, d)}``.

        ``sources`` (one per image) name the images in errors. Decode files with
        :func:`embviz.images.open_image`, as the embed step does.
        """
        import torch

        names = list(sources) if sources is not None else [None] * len(images)
        batch = torch.stack(
            [self.prepare(im, source=src) for im, src in zip(images, names, strict=True)]
        )
        return self.embed_batch(batch, layers, reshape)

    def dummy_batch(self, n: int = 1):
        """A batch of ``n`` preprocessed blank images (for shapes and warm-up)."""
        import torch
        from PIL import Image

        side = self.image_size or 224
        x = self.preprocess(Image.new("RGB", (side, side), (127, 127, 127)))
        return torch.stack([x] * n)

    def layers(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every layer whose output is a tensor, as ``(name, shape without batch)``, ``pooled`` first.

        Found with one forward pass of a blank image through hooks on all named modules.
        """
        if self._layers is None:
            names = [n for n in self._modules if n]
            out = self._run(self.dummy_batch(1), [POOLED, *names], strict=False)
            self._layers = [(n, tuple(out[n].shape[1:])) for n in [POOLED, *names] if n in out]
        return list(self._layers)

    def check_layers(self, layers: Sequence[str]) -> None:
        """Raise :class:`ModelError` naming ``model`` and the first layer it does not have."""
        for layer in layers:
            if layer == "" or (layer != POOLED and layer not in self._modules):
                some = [POOLED, *[n for n in self._modules if n][:40]]
                raise ModelError(
                    f"model {self.name!r} has no layer {layer!r}; some of its layers: {some} "
                    f"(run 'embviz layers {self.name}' for all of them with their shapes)"
                )

    def embed_batch(
        self, batch, layers: Sequence[str] = (POOLED,), reshape: Any = "mean", *, logits=False
    ):
        """Run one forward pass over ``batch`` and return ``{layer: float32 ndarray (n, d)}``.

        With ``logits=True`` the pass runs to the end and returns ``(vectors, logits)``: the
        model's class logits ``(n, classes)`` from the same pass (the ``predict`` head riding
        ``embed``); raises :class:`ModelError` for a model without a classification head.

        Parameters
        ----------
        batch:
            Tensor ``(n, 3, H, W)`` of preprocessed images (see :meth:`preprocess`).
        layers:
            Layer names from :meth:`layers`; all are captured in the same pass.
        reshape:
            How to turn a layer's ``(n, ...)`` output into ``(n, d)``: a name from
            :func:`embviz.reshape.reshape_names` or a callable (see :mod:`embviz.reshape`).
        """
        from ..reshape import apply_reshape

        layers = list(dict.fromkeys(layers))
        self.check_layers(layers)
        raw = self._run(batch, layers, strict=True, full=logits)
        result = {}
        for layer in layers:
            try:
                vec = apply_reshape(raw[layer], reshape)
            except ModelError as exc:
                raise ModelError(f"model {self.name!r}, layer {layer!r}: {exc}") from None
            result[layer] = vec.detach().float().cpu().numpy()
        if logits:
            return result, self._check_logits(raw.get(_OUTPUT))
        return result

    def logits(self, batch):
        """The model's class logits for ``batch`` (a float32 ``(n, classes)`` ndarray).

        Raises :class:`ModelError` when the forward pass returns no ``(n, classes)`` tensor
        (a backbone without a classification head).
        """
        import torch

        with self._forward_lock, torch.inference_mode():
            out = first_tensor(self._forward(self.model, batch.to(self.device)))
        return self._check_logits(out)

    def _check_logits(self, out):
        headless = getattr(self.model, "num_classes", None) == 0  # timm's num_classes=0
        if headless or out is None or out.ndim != 2:
            shape = None if out is None else tuple(out.shape)
            raise ModelError(
                f"model {self.name!r} has no classification head: its forward returns "
                f"{shape} instead of (batch, classes) logits; use a classifier, or "
                "'embviz predict --source probe' on its embedding"
            )
        return out.detach().float().cpu().numpy()

    def _run(
        self, batch, layers: Sequence[str], *, strict: bool, full: bool = False
    ) -> dict[str, Any]:
        """Captured outputs of ``layers`` (and the model's output as ``_OUTPUT`` when ``full``);
        without ``full`` the pass stops once every layer is captured."""
        import torch

        captured: dict[str, Any] = {}
        wanted = set(layers)
        handles = []

        def done() -> bool:
            return strict and not full and POOLED not in wanted and wanted <= captured.keys()

        def hook_for(name: str):
            def hook(_module, _inputs, output):
                tensor = first_tensor(output)
                if tensor is not None:
                    captured[name] = tensor
                    if done():
                        raise _Enough

            return hook

        def pooled_hook(_module, inputs):
            captured[POOLED] = first_tensor(inputs)

        with self._forward_lock:
            try:
                for name in wanted - {POOLED}:
                    handles.append(self._modules[name].register_forward_hook(hook_for(name)))
                if POOLED in wanted and self._pooled_module is not None:
                    module = self._modules[self._pooled_module]
                    handles.append(module.register_forward_pre_hook(pooled_hook))
                with torch.inference_mode():
                    try:
                        output = self._forward(self.model, batch.to(self.device))
                    except _Enough:
                        output = None
                    if POOLED in wanted and self._pooled_from_output is not None:
                        captured[POOLED] = self._pooled_from_output(output)
                    if full:
                        captured[_OUTPUT] = first_tensor(output)
            finally:
                for handle in handles:
                    handle.remove()
        if strict:
            missing = [n for n in layers if n not in captured]
            if missing:
                raise ModelError(
                    f"model {self.name!r}: layer {missing[0]!r} produced no tensor output in a "
                    "forward pass; pick another layer from 'embviz layers'"
                )
        if POOLED in captured and captured[POOLED].ndim > 2:
            captured[POOLED] = captured[POOLED].flatten(1)
        return captured
