"""Tests of similarity search: by sample ids, by vector, by uploaded image and by text (tiny CLIP)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from embviz.dataset import open_dataset
from embviz.errors import DatasetError, EmbvizError, ModelError
from embviz.images import ImageError
from embviz.pipeline.embed import embed
from embviz.pipeline.index import index as build_saved_index
from embviz.pipeline.ingest import ingest
from embviz.search import Searcher, SearchResult, searcher

torch = pytest.importorskip("torch")

TINY = "timm:test_efficientnet?pretrained=false"  # 0.4M random (seeded) weights
POOLED = "timm-test_efficientnet-pretrained-false.pooled"
BLOCK = "timm-test_efficientnet-pretrained-false.blocks.2"


def _write_digits(folder: Path, mnist_small, n: int = 60) -> Path:
    """``n`` real MNIST digits as ``folder/<label>/<i>.png``."""
    from PIL import Image

    images, labels = mnist_small
    for i in range(n):
        (folder / str(labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / str(labels[i]) / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory, mnist_small):
    """60 real digits ingested in 3 partitions and embedded with the tiny timm model: the
    ``pooled`` layer (a pre-hook) and ``blocks.2`` (a forward hook, avg_pool_2x2)."""
    root = tmp_path_factory.mktemp("search")
    folder = _write_digits(root / "images", mnist_small)
    ingest(root / "ds", source=folder, partition_rows=20, thumb_size=16, progress=False)
    embed(
        root / "ds",
        model=TINY,
        layers=["pooled", "blocks.2"],
        reshape="avg_pool_2x2",
        image_size=32,
        batch_size=16,
        device="cpu",
        progress=False,
    )
    return root / "ds"


def _copy(dataset: Path, tmp_path: Path) -> Path:
    """A private copy of a dataset, for tests that add an index or a new table version."""
    shutil.copytree(dataset, tmp_path / "ds")
    return tmp_path / "ds"


def _brute(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine distance of every row of ``vectors`` to ``query``."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return 1.0 - unit @ (query / np.linalg.norm(query))


def _top(ids, dist, k, leave_out=()):
    keep = ~np.isin(ids, leave_out)
    order = np.argsort(dist[keep], kind="stable")[:k]
    return ids[keep][order], dist[keep][order]


def _samples(dataset) -> dict[int, str]:
    table = open_dataset(dataset).read_arrow("samples", columns=["id", "uri"])
    return dict(zip(table["id"].to_pylist(), table["uri"].to_pylist(), strict=True))


def test_import_is_cheap():
    code = "import sys, embviz.search; print([m for m in ('torch', 'faiss', 'transformers') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- by ids and by vector ------------------------------------------------------------------------
@pytest.mark.parametrize("embedding", [POOLED, BLOCK])
def test_one_sample_finds_its_exact_neighbours_not_itself(digits, embedding):
    ds = open_dataset(digits)
    ids, vectors = ds.read_vectors(embedding)
    s = searcher(ds, embedding)
    for row in (0, 17, 59):
        got = s.by_ids([ids[row]], k=10)
        want_ids, want_dist = _top(ids, _brute(vectors, vectors[row]), 10, [ids[row]])
        assert isinstance(got, SearchResult) and got.query == f"similar to sample {ids[row]}"
        assert got.ids.dtype == np.int64 and got.distances.dtype == np.float32
        assert ids[row] not in got.ids
        np.testing.assert_array_equal(got.ids, want_ids)
        np.testing.assert_allclose(got.distances, want_dist, atol=1e-5)
        assert np.all(np.diff(got.distances) >= -1e-6)


def test_selection_searches_from_its_centroid(digits):
    ds = open_dataset(digits)
    ids, vectors = ds.read_vectors(POOLED)
    picked = ids[[3, 8, 40]]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    centroid = unit[[3, 8, 40]].mean(axis=0)
    got = searcher(ds, POOLED).by_ids(list(picked) + [picked[0]], k=12)  # duplicates count once
    want_ids, want_dist = _top(ids, _brute(vectors, centroid), 12, picked)
    assert got.query == "similar to 3 selected"
    assert not np.isin(picked, got.ids).any()
    np.testing.assert_array_equal(got.ids, want_ids)
    np.testing.assert_allclose(got.distances, want_dist, atol=1e-5)
    # k larger than what is left: every other sample, once
    everything = searcher(ds, POOLED).by_ids(picked, k=1000)
    assert sorted(everything.ids) == sorted(set(ids) - set(picked))


def test_by_vector_checks_its_input(digits):
    s = searcher(digits, POOLED)
    ids, vectors = open_dataset(digits).read_vectors(POOLED)
    got = s.by_vector(vectors[5] * 7.0, k=3)  # scale does not matter for cosine
    assert got.ids[0] == ids[5] and got.distances[0] < 1e-5
    with pytest.raises(ValueError, match="dims"):
        s.by_vector(np.ones(3), k=3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        s.by_vector(vectors[5], k=0)
    with pytest.raises(DatasetError, match="sample id 123456 has no vector"):
        s.by_ids([ids[0], 123456])
    with pytest.raises(DatasetError, match="select some points"):
        s.by_ids([])
    with pytest.raises(DatasetError, match="no embedding table 'nope'"):
        searcher(digits, "nope")


def test_saved_index_gives_the_same_results(digits, tmp_path):
    from embviz.index import load_for

    root = _copy(digits, tmp_path)
    ds = open_dataset(root)
    ids = ds.read_vectors(POOLED)[0]
    in_memory = Searcher(ds, POOLED)
    before = [in_memory.by_ids([i], k=8) for i in ids[:5]] + [in_memory.by_ids(ids[10:20], k=8)]
    assert in_memory.index is not load_for(ds, POOLED) is None

    build_saved_index(ds, embedding=POOLED, k=5, progress=False)
    saved = Searcher(ds, POOLED)
    assert saved.index is load_for(ds, POOLED)
    after = [saved.by_ids([i], k=8) for i in ids[:5]] + [saved.by_ids(ids[10:20], k=8)]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.distances, b.distances, atol=1e-5)


def test_searcher_is_shared_per_table_version(digits, tmp_path):
    root = _copy(digits, tmp_path)
    found: list[Searcher] = []
    threads = [
        threading.Thread(target=lambda: found.append(searcher(root, f"embeddings/{POOLED}")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 8 and all(s is found[0] for s in found)
    assert searcher(open_dataset(root), POOLED) is found[0]
    assert searcher(root, BLOCK) is not found[0]
    old = found[0].index

    embed(root, model=TINY, image_size=32, device="cpu", progress=False, force=True)
    fresh = searcher(root, POOLED)  # a new table version: a new searcher
    assert fresh is not found[0] and fresh.index is not old


# -- by image ------------------------------------------------------------------------------------
@pytest.mark.parametrize("embedding", [POOLED, BLOCK])
def test_dataset_image_finds_itself(digits, embedding):
    s = searcher(digits, embedding, device="cpu")
    uris = _samples(digits)
    for sample_id in (0, 31):
        path = Path(uris[sample_id])
        by_path = s.by_image(path, k=5)
        assert by_path.ids[0] == sample_id and by_path.distances[0] < 1e-4
        assert by_path.query == f"similar to image {path.name!r}"
        by_bytes = s.by_image(path.read_bytes(), k=5, name="mine.png")
        np.testing.assert_array_equal(by_bytes.ids, by_path.ids)
        assert by_bytes.query == "similar to uploaded image 'mine.png'"
        assert s.by_image(path.read_bytes(), k=1).query == "similar to uploaded image"


def test_concurrent_uploads_get_their_own_vectors(digits):
    """Sessions on threads share one model with layer hooks: each must get its own activations."""
    s = searcher(digits, BLOCK, device="cpu").warm()
    uris = _samples(digits)
    picks = list(uris)[:12]
    want = {i: s.embed_image(uris[i]) for i in picks}
    got: dict[int, np.ndarray] = {}

    def run(i):
        for _ in range(3):
            got[i] = s.embed_image(Path(uris[i]).read_bytes())

    threads = [threading.Thread(target=run, args=(i,)) for i in picks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in picks:
        np.testing.assert_allclose(got[i], want[i], rtol=1e-4, atol=1e-5)


def _png(tmp_path) -> bytes:
    from PIL import Image

    path = tmp_path / "ok.png"
    Image.new("RGB", (20, 20), (200, 10, 10)).save(path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda png: b"", "empty upload"),
        (lambda png: png[:60] + bytes(40), "truncated or corrupt"),
        (lambda png: b"hello, I am a text file", "not an image"),
        (lambda png: png[: len(png) // 2], "truncated or corrupt"),
    ],
    ids=["empty", "zeroed-png", "text", "truncated-png"],
)
def test_bad_upload_is_a_clear_image_error(digits, tmp_path, make, reason):
    s = searcher(digits, POOLED, device="cpu")
    with pytest.raises(ImageError) as info:
        s.by_image(make(_png(tmp_path)), name="holiday.png")
    assert info.value.reason.startswith(reason)
    assert str(info.value).startswith(f"holiday.png: {reason}")
    with pytest.raises(ImageError, match="file not found"):
        s.by_image(tmp_path / "missing.jpg")


def test_ingested_vectors_search_by_id_but_not_by_image(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vectors)
    ingest(tmp_path / "ds", source=tmp_path / "v.npy", progress=False)
    s = searcher(tmp_path / "ds", "user").warm()  # no model to warm: just the index
    got = s.by_ids([4], k=3)
    np.testing.assert_array_equal(
        got.ids, _top(np.arange(30), _brute(vectors, vectors[4]), 3, [4])[0]
    )
    assert not s.supports_text
    with pytest.raises(ModelError, match="ingested from .*v.npy.*'embviz embed'"):
        s.by_image(_png(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("embedding", ["efficientnet_lite0.blocks.5", "efficientnet_lite0.pooled"])
def test_real_model_upload_finds_itself_in_the_demo(demo_dataset, embedding):
    """The default offline model, as the demo embedded it (128 px, a hooked layer and pooled)."""
    s = searcher(demo_dataset, embedding)
    assert s.meta["model"] == "efficientnet_lite0" and s.meta["image_size"] == 128
    uris = _samples(demo_dataset)
    root = open_dataset(demo_dataset).root
    for sample_id in (7, 4321):
        path = Path(uris[sample_id])
        path = path if path.is_absolute() else root / path
        got = s.by_image(path.read_bytes(), k=10, name=path.name)
        assert got.ids[0] == sample_id and got.distances[0] < 1e-4
        assert got.distances[1] > got.distances[0]
    with pytest.raises(ImageError, match="upload.jpg: not an image"):
        s.by_image(b"<html>not a picture</html>", name="upload.jpg")
    assert not s.supports_text
    with pytest.raises(ModelError, match="CLIP-like.*'efficientnet_lite0'"):
        s.by_text("a handwritten seven")


# -- by text -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A 2-layer CLIP (32 px images, 16-D projections) with a byte-level tokenizer, saved as a
    local Hugging Face folder: built offline from nothing."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(ByteLevel.alphabet()):  # every byte, inside and at the end of a word
        vocab[char] = len(vocab)
        vocab[f"{char}</w>"] = len(vocab)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={
            **tower,
            "num_attention_heads": 2,
            "vocab_size": len(vocab),
            "max_position_embeddings": 24,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={**tower, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dataset(tmp_path_factory, tiny_clip):
    """12 generated images (coloured shapes) embedded with the tiny CLIP's pooled features."""
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("clip-ds")
    rng = np.random.default_rng(1)
    for i in range(12):
        label = ["square", "disc"][i % 2]
        im = Image.new("RGB", (48, 40), tuple(int(v) for v in rng.integers(0, 255, 3)))
        box = [int(v) for v in (*rng.integers(0, 16, 2), *rng.integers(28, 40, 2))]
        draw = ImageDraw.Draw(im)
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.rectangle if label == "square" else draw.ellipse)(box, fill=fill)
        (root / "images" / label).mkdir(parents=True, exist_ok=True)
        im.save(root / "images" / label / f"{i:02d}.png")
    ingest(root / "ds", source=root / "images", thumb_size=16, progress=False)
    result = embed(root / "ds", model=f"hf:{tiny_clip}", device="cpu", progress=False)
    return root / "ds", result.tables[0].removeprefix("embeddings/")


def test_text_search_matches_clip_text_features(clip_dataset, tiny_clip):
    from transformers import AutoTokenizer, CLIPModel

    root, embedding = clip_dataset
    s = searcher(root, embedding, device="cpu")
    assert s.layer == "pooled" and s.supports_text
    ids, vectors = open_dataset(root).read_vectors(embedding)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    for text in ("a red square", "  a small blue disc on grey, in a photo  "):
        got = s.by_text(text, k=5)
        assert got.query == f"text: {text.strip()!r}" and len(got) == 5
        assert np.isfinite(got.distances).all()
        with torch.inference_mode():
            features = model.get_text_features(
                **tokenizer([text.strip()], truncation=True, max_length=24, return_tensors="pt")
            )
        query = getattr(features, "pooler_output", features)[0].numpy()
        want_ids, want_dist = _top(ids, _brute(vectors, query), 5)
        np.testing.assert_array_equal(got.ids, want_ids)
        np.testing.assert_allclose(got.distances, want_dist, atol=1e-5)
    with pytest.raises(EmbvizError, match="needs some text"):
        s.by_text("   ")


def test_clip_upload_finds_itself(clip_dataset):
    root, embedding = clip_dataset
    s = searcher(root, embedding, device="cpu")
    for sample_id, uri in list(_samples(root).items())[:3]:
        got = s.by_image(Path(uri).read_bytes(), k=3)
        assert got.ids[0] == sample_id and got.distances[0] < 1e-4


def test_text_search_needs_a_clip_like_pooled_embedding(digits, tiny_clip, tmp_path):
    s = searcher(digits, POOLED, device="cpu")
    assert not s.supports_text
    with pytest.raises(ModelError) as info:
        s.by_text("a seven")
    msg = str(info.value)
    assert "CLIP-like model's pooled embedding" in msg and repr(TINY) in msg

    # A CLIP dataset's other layers are image-only
    root = _copy(digits, tmp_path)
    embed(
        root,
        model=f"hf:{tiny_clip}",
        layers=["vision_model.encoder"],
        reshape="cls",
        device="cpu",
        progress=False,
    )
    name = [e for e in open_dataset(root).embeddings if e.endswith("vision_model.encoder")][0]
    other = searcher(root, name, device="cpu")
    assert not other.supports_text
    with pytest.raises(ModelError, match="layer 'vision_model.encoder'"):
        other.by_text("a seven")
