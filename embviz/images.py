"""Decode image files safely into RGB, hash them, make WebP thumbnails and look thumbnails up by id."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EmbvizError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

    from .dataset import Dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageError",
    "content_hash",
    "decode_image",
    "image_info",
    "is_image_path",
    "make_thumbnail",
    "open_image",
    "read_thumbnails",
    "thumbnail_bytes",
    "thumbnail_size",
]

#: File name extensions treated as images when scanning folders (compare lower-cased).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

#: Decoders Pillow may use. Restricting them keeps e.g. EPS (which shells out to Ghostscript)
#: and other exotic plugins away from user files.
_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF")

_BOMB_RE = re.compile(r"\((\d+) pixels\)")


class ImageError(EmbvizError):
    """An image file cannot be decoded; ``reason`` is a short category for reports.

    ``str(err)`` names the file, the reason and, where known, the decoder's own message.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, detail: str | None = None):
        self.path = None if path is None else str(path)
        self.reason = reason
        self.detail = detail
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{reason}" + (f" ({detail})" if detail else ""))


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def content_hash(data: bytes) -> str:
    """blake2b (16-byte digest) hex of ``data``: equal for byte-identical files."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _bomb(path: Any, pixels: int, max_pixels: int) -> ImageError:
    return ImageError(path, f"decompression bomb: {pixels} pixels > max_pixels {max_pixels}")


def _to_rgb(im: PILImage.Image, path: Any) -> PILImage.Image:
    """Convert any supported mode to RGB: alpha over white, 16-bit and float scaled to 8 bits."""
    import numpy as np
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in ("L", "P", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return im.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if mode.startswith("I;16"):
            # Full 16-bit range onto 8 bits (65535 -> 255); clipping would saturate everything.
            out = arr.astype(np.float32) / 257.0
        else:
            arr = arr.astype(np.float64)
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            if mode == "F" and lo >= 0.0 and hi <= 1.0:
                out = arr * 255.0
            elif lo >= 0.0 and hi <= 255.0:
                out = arr
            elif mode == "I" and lo >= 0.0 and hi <= 65535.0:
                out = arr / 257.0
            else:
                out = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
            out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
        gray = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    raise ImageError(path, "unsupported mode", mode)


def _decode(
    data: bytes, path: Any, max_pixels: int, reduce_to: int | None
) -> tuple[PILImage.Image, int, int]:
    """Open, bomb-check, decode, orient and convert; return ``(rgb, full_width, full_height)``."""
    from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise _bomb(path, width * height, max_pixels)
            if im.format == "PNG":
                # Pillow does not check chunk CRCs while decoding, so a damaged PNG can decode
                # to garbage; verify() checks them without decompressing (cheap).
                with Image.open(io.BytesIO(data), formats=("PNG",)) as check:
                    check.verify()
            try:
                orientation = int(im.getexif().get(ExifTags.Base.Orientation, 1) or 1)
            except Exception:  # a broken EXIF block must not cost the image
                orientation = 1
            if reduce_to and im.format in ("JPEG", "MPO"):
                # JPEG can decode at 1/2..1/8 scale straight from the DCT: much faster, and the
                # result is still at least ``reduce_to`` on its shorter requested side.
                im.draft("RGB", (reduce_to, reduce_to))
            im.load()
            try:
                oriented = ImageOps.exif_transpose(im)
            except Exception:
                oriented = im
            rgb = _to_rgb(oriented, path)
            rgb.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check ran inside Image.open (the warning arrives as an exception when
        # warnings are errors, as under pytest).
        match = _BOMB_RE.search(str(exc))
        pixels = int(match.group(1)) if match else -1
        if pixels > max_pixels:
            raise _bomb(path, pixels, max_pixels) from exc
        raise ImageError(path, f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(path, "not an image", "no decoder recognises this file") from exc
    except MemoryError as exc:
        raise ImageError(path, "out of memory") from exc
    except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        raise ImageError(path, "truncated or corrupt", f"{type(exc).__name__}: {exc}") from exc
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return rgb, width, height


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        # A FIFO or device named like an image would block read() forever.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageError(path, "not a regular file")
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(path, "file not found") from exc
    except IsADirectoryError as exc:
        raise ImageError(path, "is a directory") from exc
    except OSError as exc:
        raise ImageError(
            path, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}"
        ) from exc
    if not data:
        raise ImageError(path, "zero-byte file")
    return data


def open_image(
    path: str | os.PathLike, *, max_pixels: int = 100_000_000, reduce_to: int | None = None
) -> PILImage.Image:
    """Decode an image file into a fully loaded RGB :class:`PIL.Image.Image`.

    Handles JPEG, PNG, WebP, BMP, TIFF (and GIF): grayscale, 16-bit and float images are scaled
    to 8 bits, palettes expanded, transparency composited onto white, CMYK converted, and the
    EXIF orientation applied.

    Parameters
    ----------
    path:
        The image file.
    max_pixels:
        Refuse images whose header claims more than this many pixels (width x height), before
        any pixel is decoded. Pillow's own decompression-bomb limit also applies and is reported
        the same way.
    reduce_to:
        Optional hint that the caller only needs about this many pixels on the longest side:
        JPEGs are then decoded at a reduced scale (1/2 to 1/8), never smaller than asked.

    Returns
    -------
    The RGB image, oriented for display.

    Raises
    ------
    ImageError
        With ``reason`` one of ``"file not found"``, ``"unreadable"``, ``"zero-byte file"``,
        ``"not an image"``, ``"truncated or corrupt"``, ``"decompression bomb: ..."``,
        ``"unsupported mode"``, ``"out of memory"``.
    """
    return image_info(path, max_pixels=max_pixels, reduce_to=reduce_to)[0]


def image_info(
    path: str | os.PathLike, *, max_pixels: int = 100_000_000, reduce_to: int | None = None
) -> tuple[PILImage.Image, int, int, str]:
    """Read a file once and return ``(rgb_image, width, height, content_hash)``.

    ``width`` and ``height`` are the full-resolution size after EXIF orientation (even when
    ``reduce_to`` made the returned image smaller); ``content_hash`` is :func:`content_hash` of
    the file's bytes. Parameters and errors are those of :func:`open_image`.
    """
    data = _read_bytes(path)
    image, width, height = _decode(data, path, max_pixels, reduce_to)
    return image, width, height, content_hash(data)


def decode_image(
    data: bytes, name: str, *, max_pixels: int = 100_000_000, reduce_to: int | None = None
) -> PILImage.Image:
    """The RGB image in ``data`` (e.g. an upload), checked like a file: bombs refused, EXIF
    orientation applied; :class:`ImageError` names ``name`` when it is not a usable image."""
    return _decode(data, name, max_pixels, reduce_to)[0]


def make_thumbnail(img: PILImage.Image, size: int = 96, *, quality: int = 80) -> bytes:
    """Encode ``img`` as a WebP thumbnail whose longest side is ``size`` pixels (aspect kept).

    Parameters
    ----------
    img:
        An RGB image (e.g. from :func:`open_image`).
    size:
        Longest side of the thumbnail in pixels; smaller images are scaled up to it.
    quality:
        WebP quality, 0-100.

    Returns
    -------
    The WebP file's bytes.
    """
    from PIL import Image

    w, h = img.size
    new = thumbnail_size((w, h), size)
    scale = new[0] / w
    if img.mode != "RGB":
        img = img.convert("RGB")
    if new != (w, h):
        img = img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0 if scale < 1 else None)
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=quality, method=4)
    return buf.getvalue()


def thumbnail_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``(width, height)`` of an image of ``size`` scaled so its longest side is ``longest``."""
    if longest < 1:
        raise ValueError(f"thumbnail size must be >= 1, got {longest}")
    w, h = size
    scale = longest / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def read_thumbnails(ds: Dataset, thumb_ids) -> dict[int, bytes]:
    """The WebP bytes of the given thumbnail ids in dataset ``ds``: ``{thumb_id: bytes}``.

    Ids that are None, negative or absent (and a dataset without thumbnails) are left out.
    Reads only the partitions whose recorded ``id_range`` can hold them, filtered by id
    (:meth:`~embviz.dataset.Dataset.read_ids`); never touches the original image files.
    """
    wanted = sorted({int(t) for t in thumb_ids if t is not None and int(t) >= 0})
    if not wanted or not ds.has("thumbnails"):
        return {}
    table = ds.read_ids("thumbnails", wanted, ["image"])
    images = table.column("image").to_pylist()
    return dict(zip(table.column("thumb_id").to_pylist(), images, strict=True))


def thumbnail_bytes(ds: Dataset, thumb_id: int | None) -> bytes | None:
    """The WebP bytes of thumbnail ``thumb_id`` in dataset ``ds``, or None when there is none
    (:func:`read_thumbnails` of one id)."""
    if thumb_id is None:
        return None
    return read_thumbnails(ds, [thumb_id]).get(int(thumb_id))
