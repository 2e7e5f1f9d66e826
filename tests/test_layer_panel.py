"""The layer picker without a browser: the model's blocks in order with their shapes, a mapped
block switches the map, a new layer is embedded and mapped by the CLI as a background job (or
its commands are shown above the row limit), and bad input gets a message naming it."""

from __future__ import annotations

import html
import shlex
import shutil

import numpy as np
import panel as pn
import pytest
from conftest import wait_until

from embviz.app import layer_job, layer_panel
from embviz.app.layer_job import layer_blocks, running_job, start_job
from embviz.app.layer_panel import LayerPanel
from embviz.app.session import Session
from embviz.app.widgets.markup import Markup
from embviz.dataset import Dataset, open_dataset

pytest.importorskip("torch")

TINY = "timm:test_efficientnet?pretrained=false"  # 0.4M random (seeded) weights
PREFIX = "timm-test_efficientnet-pretrained-false"


def make_tiny(root, mnist_small, n: int = 120, parts: int = 3) -> Dataset:
    """``n`` real digits as PNGs in ``parts`` partitions, embedded by the tiny model at 32 px
    (layers pooled and blocks.1), each layer mapped by PCA."""
    import pyarrow as pa
    from PIL import Image

    from embviz.pipeline.embed import embed
    from embviz.pipeline.reduce import reduce

    images, labels = mnist_small
    (root / "png").mkdir(parents=True)
    uris = []
    for i in range(n):
        uris.append(str(root / "png" / f"{i:04d}.png"))
        Image.fromarray(images[i]).save(uris[-1])
    ds = Dataset.create(root / "ds")
    writer = ds.writer("samples")
    for i, chunk in enumerate(np.array_split(np.arange(n), parts)):
        writer.write_part(
            i,
            pa.table(
                {
                    "id": pa.array(chunk, pa.int64()),
                    "uri": pa.array([uris[j] for j in chunk], pa.string()),
                    "label": pa.array([str(labels[j]) for j in chunk], pa.string()),
                    "split": pa.array(["train"] * len(chunk), pa.string()),
                }
            ),
        )
    writer.commit()
    ds = open_dataset(root / "ds")
    embed(ds, model=TINY, layers=["pooled", "blocks.1"], image_size=32, progress=False)
    for layer in ("pooled", "blocks.1"):
        reduce(ds, embedding=f"{PREFIX}.{layer}", method="pca", progress=False)
    return open_dataset(root / "ds")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, mnist_small):
    """The tiny dataset's folder (read-only: tests that run jobs copy it)."""
    return make_tiny(tmp_path_factory.mktemp("layers"), mnist_small).root


@pytest.fixture
def tiny_copy(tiny, tmp_path):
    """A copy of the tiny dataset a test may add tables to."""
    return shutil.copytree(tiny, tmp_path / "ds")


def shown(folder, embedding: str = f"{PREFIX}.pooled", **params) -> LayerPanel:
    """A session on ``embedding`` and its layer panel, shown (the model loaded)."""
    panel = LayerPanel(Session(folder, embedding=embedding), **params)
    panel.show()
    assert panel.blocks, panel.notice.message
    return panel


def test_blocks_are_top_level_modules_with_stages_opened_once():
    # efficientnet-like: the numbered stages open once (not their own numbered children);
    # pooled goes after the last feature map. ViT-like: a ModuleList (no output) always opens.
    eff = [("pooled", (64,)), ("stem", (8, 16, 16)), ("blocks", (32, 4, 4))]
    eff += [(f"blocks.{i}", (8 * (i + 1), 8, 8)) for i in range(4)]
    eff += [(f"blocks.{i}.{j}", (8, 8, 8)) for i in range(4) for j in range(2)]
    eff += [("head", (64, 4, 4)), ("head.act", (64, 4, 4)), ("classifier", (10,))]
    names = [n for n, _ in layer_blocks(eff)]
    assert names == ["stem", *(f"blocks.{i}" for i in range(4)), "head", "pooled", "classifier"]
    assert dict(layer_blocks(eff))["blocks.2"] == (24, 8, 8)
    assert [n for n, _ in layer_blocks(eff, most=5)][:3] == ["stem", "blocks", "head"]

    vit = [("pooled", (32,)), ("vit", (5, 32)), ("vit.embeddings", (5, 32))]
    vit += [(f"vit.encoder.layer.{i}", (5, 32)) for i in range(4)]  # encoder.layer: a ModuleList
    vit += [("vit.layernorm", (5, 32)), ("classifier", (10,))]
    names = [n for n, _ in layer_blocks(vit)]
    assert names[:5] == ["vit.embeddings", *(f"vit.encoder.layer.{i}" for i in range(4))]
    assert names[-3:] == ["vit.layernorm", "pooled", "classifier"]


def test_the_diagram_lists_the_models_blocks_in_order_with_shapes_and_states(tiny):
    from embviz.models import cached_embedder

    panel = shown(tiny)
    shapes = dict(cached_embedder(TINY, image_size=32).layers())
    names = [b[0] for b in panel.blocks]
    stages = [n for n in names if n.startswith("blocks.")]
    assert stages == [f"blocks.{i}" for i in range(len(stages))] and len(stages) >= 4
    assert names.index("conv_stem") < names.index("blocks.0") < names.index("pooled")
    for name, text, _ in panel.blocks:
        assert text == "×".join(map(str, shapes[name]))
    states = {name: state for name, _, state in panel.blocks}
    assert states["blocks.1"] == states["pooled"] == "mapped"
    assert {states[n] for n in names if n not in ("blocks.1", "pooled")} == {"none"}
    # The drawn element: one box per block coloured by state, the picked one outlined, and
    # the names and shapes written on them.
    overlay = panel.diagram(panel.layer)
    rects, labels, shape_labels = overlay.values()
    assert list(rects.dimension_values("layer")) == names
    assert list(rects.dimension_values("picked")).count(True) == 1
    assert list(labels.dimension_values("text")) == names
    assert "24×8×8" in list(shape_labels.dimension_values("text"))


def test_picking_a_mapped_block_switches_the_map_and_the_map_picks_the_block(tiny):
    panel = shown(tiny)
    session = panel.session
    assert panel.layer == "pooled"  # the session's embedding's layer
    row = [b[0] for b in panel.blocks].index("blocks.1")
    panel.tap.event(x=0.5, y=row + 0.5)  # a click on the block
    assert panel.layer == "blocks.1"
    assert session.embedding == f"{PREFIX}.blocks.1"
    assert session.projection == f"{PREFIX}.blocks.1.pca2d"
    session.embedding = f"{PREFIX}.pooled"  # the View tab's choice shows in the picker
    assert panel.layer == "pooled" and session.projection == f"{PREFIX}.pooled.pca2d"


def test_a_missing_layer_is_named_and_the_session_keeps_working(tiny):
    panel = shown(tiny)
    session = panel.session
    panel.layer = "blocks.9"
    assert panel.notice.error
    assert "'blocks.9'" in panel.notice.message and TINY in panel.notice.message
    assert session.embedding == f"{PREFIX}.pooled"
    assert panel.embed_layer() is None and running_job(tiny) is None
    panel.layer = "blocks.1"
    assert not panel.notice.error and session.embedding == f"{PREFIX}.blocks.1"


def test_a_new_layer_is_embedded_and_mapped_by_the_cli_in_the_background(tiny_copy):
    panel = shown(tiny_copy, reducer="pca")
    session = panel.session
    seen: list[str] = []
    panel.param.watch(lambda e: seen.append(e.new), "progress")
    panel.layer = "blocks.3"
    assert session.embedding == f"{PREFIX}.pooled"  # nothing to switch to yet
    assert "has no embedding yet" in panel.notice.message
    job = panel.embed_layer()
    assert job is not None and running_job(tiny_copy) is job
    assert panel.embed_layer() is None and "already running" in panel.notice.message
    wanted = f"{PREFIX}.blocks.3"
    wait_until(lambda: session.embedding == wanted, 60, "the map to switch to blocks.3")
    assert job.wait(10).status == "done" and running_job(tiny_copy) is None
    ds = open_dataset(tiny_copy)
    assert ds.table(f"embeddings/{wanted}")["rows"] == 120
    assert session.projection == f"{wanted}.pca2d" and session.store.n == 120
    assert dict(b[::2] for b in panel.blocks)["blocks.3"] == "mapped"
    counts = [s for s in seen if "embedding blocks.3: " in s]
    assert counts and counts[-1].endswith("120/120 images"), seen
    assert any(s.startswith("step 2/2: mapping blocks.3 (pca)") for s in seen), seen


def test_above_the_row_limit_the_commands_are_shown_and_no_job_starts(tiny, monkeypatch):
    monkeypatch.setattr(layer_panel, "APP_JOB_ROWS", 100)
    panel = shown(tiny)
    panel.layer = "blocks.3"
    assert not button(panel, "Embed and map this layer").visible
    text = " ".join(m.object for m in panel.__panel__().select(Markup))
    lines = [line for line in html.unescape(text).split("\n") if "embviz " in line]
    lines = [line[line.index("embviz ") :].split("</pre>")[0] for line in lines]
    assert [shlex.split(line) for line in lines] == [["embviz", *a] for a in panel.commands()]
    embed, reduce = panel.commands()
    assert embed[:2] == ["embed", str(tiny.resolve())] and "--image-size" in embed
    assert (
        embed[embed.index("--model") + 1] == TINY
        and embed[embed.index("--layer") + 1] == "blocks.3"
    )
    assert reduce[reduce.index("--embedding") + 1] == f"{PREFIX}.blocks.3"
    assert "--pca" in reduce and reduce[reduce.index("--method") + 1] == "umap"  # the demo's
    assert "120 samples are more than the app embeds (100)" in panel.notice.message
    assert panel.embed_layer() is None and running_job(tiny) is None


def test_a_failing_job_shows_the_last_line_the_command_wrote(tiny_copy, monkeypatch):
    panel = shown(tiny_copy, reducer="pca")
    panel.layer = "blocks.3"
    bad = [["embed", str(tiny_copy), "--model", TINY, "--image-size", "32", "--layer", "nope"]]
    monkeypatch.setattr(panel, "commands", lambda layer=None: bad)
    job = panel.embed_layer()
    wait_until(lambda: panel.notice.error, 60, "the job to fail")
    assert job.state.status == "failed"
    assert panel.notice.message.startswith("Embedding blocks.3 failed: embviz embed: error:")
    assert "has no layer 'nope'" in panel.notice.message
    assert button(panel, "Embed and map this layer").visible  # the person may try again
    assert panel.session.embedding == f"{PREFIX}.pooled"


def test_a_job_stops_when_asked(tiny_copy):
    seen = []
    args = [["embed", str(tiny_copy), "--model", TINY, "--image-size", "32", "--layer", "bn1"]]
    job = start_job(tiny_copy, args, title="test", listener=seen.append)
    with pytest.raises(layer_job.JobRunning, match="already running on this dataset: test"):
        start_job(tiny_copy, args, title="again", listener=seen.append)
    job.stop()
    assert job.wait(60).status == "stopped" and seen[-1].status == "stopped"
    assert running_job(tiny_copy) is None


def test_a_model_that_cannot_load_is_reported_and_the_map_still_works(tiny_copy):
    ds = open_dataset(tiny_copy)

    def rename(manifest):
        for key, entry in manifest["tables"].items():
            if key.startswith("embeddings/"):
                entry["meta"]["model"] = "timm:no_such_model_here"

    ds.update_manifest(rename)
    panel = LayerPanel(Session(tiny_copy))
    panel.show()
    assert (
        panel.notice.error and "'timm:no_such_model_here' cannot be loaded" in panel.notice.message
    )
    assert panel.blocks == []
    panel.session.embedding = f"{PREFIX}.blocks.1"
    assert panel.session.projection == f"{PREFIX}.blocks.1.pca2d"


def test_the_explorer_has_a_model_tab_with_the_layer_picker(tiny):
    from embviz.app.explorer import Explorer

    explorer = Explorer(tiny)
    assert explorer.layers.available and not explorer.model.available
    tabs = explorer.sidebar()  # View, Curate, Model (the model's predictions need a predict)
    assert len(tabs) == 3 and list(tabs[2].objects) == [explorer.layers.__panel__()]
    tabs.active = 2  # opening the tab loads the model and draws its blocks
    assert explorer.session.embedding == f"{PREFIX}.{explorer.layers.layer}"
    assert explorer.layers.blocks


def button(panel, label: str):
    """The panel's button labelled ``label``."""
    return next(b for b in panel.__panel__().select(pn.widgets.Button) if b.label == label)


def test_a_picked_layer_is_the_one_the_activations_show(demo_dataset):
    """The explorer links the diagram's layer to the open sample's activation grid."""
    from embviz.app.explorer import Explorer

    ex = Explorer(demo_dataset)
    ex.layers.layer = "blocks.3"
    assert ex.samples.activations.layer == "blocks.3"
