"""Decoding odd and broken image files: every good one becomes RGB, every bad one an ImageError."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from embviz.errors import EmbvizError
from embviz.images import (
    IMAGE_EXTENSIONS,
    ImageError,
    image_info,
    is_image_path,
    make_thumbnail,
    open_image,
    thumbnail_size,
)

RNG = np.random.default_rng(0)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` but which carries almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _noise(h: int, w: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def good_files(tmp_path):
    """``{name: (path, (width, height))}`` for one file per supported format and mode."""
    out = {}

    def save(name, img, **kw):
        path = tmp_path / name
        img.save(path, **kw)
        out[name] = (path, img.size)

    save("rgb.jpg", _noise(30, 40), quality=90)
    save("upper.JPEG", _noise(12, 7))
    save("rgb.png", _noise(20, 10))
    save("rgb.webp", _noise(16, 24), quality=80)
    save("rgb.bmp", _noise(9, 11))
    save("rgb.tif", _noise(13, 17))
    save("gray.png", Image.new("L", (8, 6), 128))
    save("gray_alpha.png", Image.new("LA", (8, 6), (0, 128)))
    save("palette.png", _noise(10, 10).convert("P", palette=Image.Palette.ADAPTIVE, colors=8))
    save("cmyk.jpg", Image.new("CMYK", (14, 5), (0, 255, 255, 0)))
    save("bilevel.png", Image.new("1", (33, 7), 1))
    return out


def test_good_files_open_as_rgb_with_their_size(good_files):
    for name, (path, size) in good_files.items():
        img = open_image(path)
        assert img.mode == "RGB", name
        assert img.size == size, name
        np.asarray(img)  # fully loaded: no lazy decode left to fail later


def test_cmyk_is_converted_not_reinterpreted(good_files):
    # CMYK (0, 255, 255, 0) is pure red.
    r, g, b = np.asarray(open_image(good_files["cmyk.jpg"][0])).reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 30 and b < 30


def test_16bit_gradient_spans_the_8bit_range(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    path = tmp_path / "g16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I;16")
    row = np.asarray(open_image(path))[0, :, 0].astype(int)
    assert row.min() <= 1 and row.max() >= 254  # scaled, not clipped to 255 everywhere
    assert (np.diff(row) >= 0).all()
    assert len(np.unique(row)) > 200


def test_int32_and_float_images_are_scaled(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (3, 1))
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    wide = np.tile(np.linspace(-1000, 50_000_000, 64).astype(np.int32), (3, 1))
    Image.fromarray(wide, mode="I").save(tmp_path / "i.tif")
    for name in ("f.tif", "i.tif"):
        row = np.asarray(open_image(tmp_path / name))[0, :, 0].astype(int)
        assert row.min() <= 1 and row.max() >= 254, name
        assert (np.diff(row) >= 0).all(), name


def test_transparency_is_composited_onto_white(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:, :3] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[:, 3:] = (255, 0, 0, 255)  # opaque red stays red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(open_image(tmp_path / "a.png"))
    assert (out[:, :3] == 255).all()
    assert (out[:, 3:] == (255, 0, 0)).all()

    pal = Image.new("P", (5, 5), 0)
    pal.putpalette([0, 0, 0] + [0, 0, 255] * 255)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert (np.asarray(open_image(tmp_path / "p.png")) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    # Landscape: left half red, right half blue. Orientation 6 means "rotate 90 deg clockwise
    # to display", so the displayed image is portrait with red on top.
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = (255, 0, 0)
    arr[:, 40:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    img = open_image(path)
    assert img.size == (40, 80)
    out = np.asarray(img).astype(int)
    assert out[:30, :, 0].mean() > 200 and out[:30, :, 2].mean() < 50
    assert out[50:, :, 2].mean() > 200 and out[50:, :, 0].mean() < 50
    # The reported size is the displayed full size even when decoding at reduced scale.
    small, w, h, _ = image_info(path, reduce_to=8)
    assert (w, h) == (40, 80)
    assert small.height > small.width


def _bad_files(tmp_path):
    """``{name: (path, expected reason prefix, open_image kwargs)}`` for broken inputs."""
    cases = {}
    (tmp_path / "zero.jpg").write_bytes(b"")
    cases["zero"] = ("zero.jpg", "zero-byte file", {})
    (tmp_path / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    cases["text"] = ("notes.jpg", "not an image", {})
    (tmp_path / "noise.png").write_bytes(RNG.bytes(300))
    cases["noise"] = ("noise.png", "not an image", {})
    buf = io.BytesIO()
    _noise(64, 64).save(buf, format="JPEG", quality=90)
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases["truncated jpeg"] = ("trunc.jpg", "truncated or corrupt", {})
    buf = io.BytesIO()
    _noise(32, 32).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[60:80] = bytes(20)  # inside IDAT: CRC no longer matches
    (tmp_path / "crc.png").write_bytes(bytes(data))
    cases["corrupt png"] = ("crc.png", "truncated or corrupt", {})
    (tmp_path / "header_bomb.png").write_bytes(_png_header_only(30_000, 30_000))
    cases["header bomb"] = ("header_bomb.png", "decompression bomb: 900000000 pixels", {})
    Image.new("1", (2000, 1000)).save(tmp_path / "real_bomb.png")  # ~few hundred bytes
    cases["real bomb"] = (
        "real_bomb.png",
        "decompression bomb: 2000000 pixels > max_pixels 1000000",
        {"max_pixels": 1_000_000},
    )
    cases["missing"] = ("missing.jpg", "file not found", {})
    return cases


def test_bad_files_raise_image_error_with_reason(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    for label, (name, reason, kw) in _bad_files(tmp_path).items():
        with pytest.raises(ImageError) as info:
            open_image(tmp_path / name, **kw)
        err = info.value
        assert isinstance(err, EmbvizError)
        assert err.reason.startswith(reason), (label, err.reason)
        assert name in str(err), label
    assert before == Image.MAX_IMAGE_PIXELS  # the global limit is never changed


def test_pillow_bomb_warning_range_is_an_error_not_a_warning(tmp_path):
    # 95 M pixels: above Pillow's warning limit, below our default max_pixels. Under pytest
    # warnings are errors; the warning must surface as ImageError, not escape as a warning.
    (tmp_path / "warn.png").write_bytes(_png_header_only(10_000, 9_500))
    with pytest.raises(ImageError) as info:
        open_image(tmp_path / "warn.png")
    assert info.value.reason.startswith("decompression bomb")


def test_content_hash_matches_bytes_not_names(tmp_path, good_files):
    path = good_files["rgb.png"][0]
    shutil.copy(path, tmp_path / "copy.png")
    _, _, _, h1 = image_info(path)
    _, _, _, h2 = image_info(tmp_path / "copy.png")
    _, _, _, h3 = image_info(good_files["rgb.bmp"][0])
    assert h1 == h2 and h1 != h3 and len(h1) == 32


def test_thumbnail_is_webp_with_longest_side_size(good_files):
    for name, size in (("rgb.jpg", 96), ("rgb.png", 64), ("bilevel.png", 16)):
        img = open_image(good_files[name][0])
        data = make_thumbnail(img, size)
        thumb = Image.open(io.BytesIO(data))
        assert thumb.format == "WEBP"
        assert max(thumb.size) == size
        assert thumb.size == thumbnail_size(img.size, size)
        w, h = img.size
        # Aspect kept up to rounding of the short side to whole pixels.
        short = min(thumb.size) * max(w, h) / size
        assert abs(short - min(w, h)) <= max(w, h) / size
    with pytest.raises(ValueError):
        thumbnail_size((10, 10), 0)


def test_image_extensions_case_insensitive():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"} == set(IMAGE_EXTENSIONS)
    assert is_image_path("a/B.JPG") and is_image_path("x.TiFf")
    assert not is_image_path("x.txt") and not is_image_path("jpg")


def test_import_is_cheap():
    code = "import sys, embviz.images; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
