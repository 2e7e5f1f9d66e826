"""How a session's images reach the page: same-origin route URLs on a server, data URIs in a notebook.

A ``panel serve`` page asks the server's ``/embviz/thumb`` and ``/embviz/image`` routes, which
the browser caches. A notebook's page is served by Jupyter, which has no such routes (and whose
address the kernel cannot know: JupyterHub prefixes, VS Code's local kernels), so there every
image travels inside the data that names it, as a ``data:image/webp;base64,...`` URI: the
frame's budget (:data:`embviz.render.overlay.IMAGE_BUDGET`) then counts its bytes.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections import OrderedDict

import numpy as np

from embviz.dataset import Dataset

from . import image_source

__all__ = ["INLINE_IMAGE_PX", "MODES", "ImageLinks", "data_uri"]

log = logging.getLogger(__name__)

#: How images reach the page: "routes" (URLs to the server's image routes) or "inline".
MODES = ("routes", "inline")
#: Longest side of a detail-panel image sent inline: big enough to look at, about 20-60 KB.
INLINE_IMAGE_PX = 512
_DETAIL_CACHE = 16


def data_uri(data: bytes | None, mime: str = "image/webp") -> str:
    """``data:<mime>;base64,...`` of ``data`` ("" for None or empty)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}" if data else ""


class ImageLinks:
    """The image sources (``src`` strings) of one dataset's samples, in one mode.

    Parameters
    ----------
    ds : the dataset; without a thumbnails table every source is "".
    mode : "routes" (URLs under ``prefix``) or "inline" (data URIs).
    prefix : the server's URL prefix (``panel serve --prefix``); routes mode only.
    """

    def __init__(self, ds: Dataset, mode: str = "routes", prefix: str = ""):
        if mode not in MODES:
            raise ValueError(f"images={mode!r}: use one of {list(MODES)}")
        self.mode = mode
        self.key = image_source.register(ds.root) if ds.has("thumbnails") else None
        self._prefix = prefix
        self._details: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def inline(self) -> bool:
        """Whether images travel as data URIs (their bytes count against frame budgets)."""
        return self.mode == "inline"

    def thumbs(self, ids) -> list[str]:
        """The thumbnail sources of samples ``ids``, in order ("" where a sample has none)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.key is None:
            return [""] * len(ids)
        if not self.inline:
            return [image_source.thumb_url(self.key, int(i), prefix=self._prefix) for i in ids]
        entry = image_source.entry(self.key)
        return [data_uri(b) for b in image_source.thumbs_bytes(entry, ids)]

    def thumb(self, sample_id: int) -> str:
        """The thumbnail source of one sample ("" when it has none)."""
        return self.thumbs([sample_id])[0]

    def image(self, sample_id: int) -> str:
        """The source of a sample's large image: a route URL, or inline the original image
        (decoded safely from inside the dataset's image folder) at most :data:`INLINE_IMAGE_PX`
        on its longest side, else its thumbnail."""
        if self.key is None:
            return ""
        sid = int(sample_id)
        if not self.inline:
            return image_source.image_url(self.key, sid, prefix=self._prefix)
        with self._lock:
            if sid in self._details:
                self._details.move_to_end(sid)
                return self._details[sid]
        src = self._inline_image(sid)
        with self._lock:
            self._details[sid] = src
            while len(self._details) > _DETAIL_CACHE:
                self._details.popitem(last=False)
        return src

    def _inline_image(self, sample_id: int) -> str:
        from embviz.images import ImageError, make_thumbnail, open_image

        entry = image_source.entry(self.key)
        found = image_source.full_image(entry, sample_id)
        if found is not None:
            try:
                img = open_image(found[0], reduce_to=INLINE_IMAGE_PX)
                side = min(INLINE_IMAGE_PX, max(img.size))
                return data_uri(make_thumbnail(img, side, quality=85))
            except (ImageError, OSError, ValueError) as exc:
                log.info("embviz: showing the thumbnail of sample %d: %s", sample_id, exc)
        return self.thumb(sample_id)
