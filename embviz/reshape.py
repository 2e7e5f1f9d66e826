"""Reshape strategies that turn a layer's (n, ...) activations into (n, d) embedding vectors."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from .errors import ModelError

__all__ = ["apply_reshape", "reshape_label", "reshape_names", "resolve_reshape"]

_POOL_RE = re.compile(r"^avg_pool_(\d+)x(\d+)$")


def _mean(x):
    # (n, C, H, W) -> mean over H, W; (n, T, C) tokens -> mean over T.
    if x.ndim == 4:
        return x.mean(dim=(2, 3))
    if x.ndim == 3:
        return x.mean(dim=1)
    return x.flatten(1)


def _flatten(x):
    return x.flatten(1)


def _cls(x):
    if x.ndim != 3:
        raise ModelError(
            f"'cls' takes token outputs shaped (n, tokens, channels), got {tuple(x.shape)}; "
            "use 'mean' or 'flatten'"
        )
    return x[:, 0]


def _as_grid(x):
    """(n, C, H, W) as is; (n, T, C) tokens as (n, C, s, s) when T (or T - 1 after a CLS) is square."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        n, t, c = x.shape
        for skip in (0, 1):
            side = math.isqrt(t - skip)
            if side * side == t - skip and side > 0:
                return x[:, skip:].transpose(1, 2).reshape(n, c, side, side)
    raise ModelError(
        f"avg_pool_NxN takes (n, C, H, W) maps or a square grid of tokens, got {tuple(x.shape)}"
    )


def _avg_pool(rows: int, cols: int) -> Callable[[Any], Any]:
    def pool(x):
        import torch.nn.functional as F

        return F.adaptive_avg_pool2d(_as_grid(x).float(), (rows, cols)).flatten(1)

    return pool


_STRATEGIES: dict[str, Callable[[Any], Any]] = {"mean": _mean, "flatten": _flatten, "cls": _cls}


def reshape_names() -> list[str]:
    """Names of the built-in strategies (``avg_pool_NxN`` stands for any N, e.g. ``avg_pool_2x2``)."""
    return [*_STRATEGIES, "avg_pool_NxN"]


def reshape_label(reshape: str | Callable[[Any], Any]) -> str:
    """A stable text form of ``reshape`` for manifests and fingerprints (callables by import path)."""
    if isinstance(reshape, str):
        return reshape
    module = getattr(reshape, "__module__", None) or "?"
    name = getattr(reshape, "__qualname__", None) or type(reshape).__qualname__
    return f"{module}.{name}"


def resolve_reshape(reshape: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The function for strategy ``reshape``; raises :class:`ModelError` listing the valid names."""
    if callable(reshape):
        return reshape
    if isinstance(reshape, str):
        if reshape in _STRATEGIES:
            return _STRATEGIES[reshape]
        match = _POOL_RE.match(reshape)
        if match and int(match[1]) > 0 and int(match[2]) > 0:
            return _avg_pool(int(match[1]), int(match[2]))
    raise ModelError(
        f"unknown reshape strategy {reshape!r}; valid: {reshape_names()} or a callable "
        "taking a tensor (n, ...) and returning (n, d)"
    )


def apply_reshape(x, reshape: str | Callable[[Any], Any] = "mean"):
    """Turn activations ``x`` (a torch tensor ``(n, ...)``) into an ``(n, d)`` tensor.

    Parameters
    ----------
    x:
        A layer's output: ``(n, d)`` passes through unchanged; ``(n, C, H, W)`` feature maps and
        ``(n, T, C)`` token sequences are reduced by the strategy.
    reshape:
        ``mean`` (average over spatial positions or tokens), ``flatten`` (keep everything),
        ``avg_pool_NxN`` (adaptive average pool to an N x N grid, then flatten: keeps coarse
        layout at N*N times the size of ``mean``), ``cls`` (token 0 of a transformer), or a
        callable ``tensor -> (n, d) tensor``.

    Returns
    -------
    torch.Tensor of shape ``(n, d)``.
    """
    fn = resolve_reshape(reshape)
    if x.ndim == 2:
        return x
    if x.ndim == 1:
        return x[:, None]
    out = fn(x)
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ModelError(
            f"reshape {reshape_label(reshape)!r} turned {tuple(x.shape)} into {tuple(out.shape)}; "
            "it must return (n, d)"
        )
    return out
