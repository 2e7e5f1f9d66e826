"""``embviz saliency``: maps of chosen samples cached once, bad ids named, and the report's
label-issue gallery showing the cached maps beside its images (and a note before there are any)."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from embviz.dataset import Dataset, open_dataset
from embviz.pipeline.cli import main
from embviz.report import write_report

TINY = "timm:test_efficientnet?pretrained=false"  # 0.4M-parameter stand-in, seeded random weights
CLASSES = (0, 3, 7)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, mnist_small):
    """48 MNIST digits (16 each of 0, 3, 7) ingested, embedded by TINY at 32 px, predicted by
    a 3-fold probe and scored: ``(dataset dir, image dir)``."""
    images, labels = mnist_small
    root = tmp_path_factory.mktemp("saliency")
    for c in CLASSES:
        for i in np.flatnonzero(labels == c)[:16]:
            path = root / "imgs" / str(c) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(path)
    ds = str(root / "ds")
    for argv in (
        ["ingest", str(root / "imgs"), "--out", ds, "--partition-rows", "20"],
        ["embed", ds, "--model", TINY, "--image-size", "32", "--name", "tiny"],
        ["predict", ds, "--folds", "3"],
        ["score", ds, "-k", "5"],
    ):
        assert main(["-q", *argv]) == 0, argv
    return Path(ds), root / "imgs"


def _run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """``embviz -q saliency ARGV``: exit status, its JSON result (None on error), stderr."""
    code = main(["-q", "saliency", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def _gallery_ids(ds: Path) -> list[int]:
    """The samples of the report's label-issue gallery, in its order."""
    from embviz.report.data import load_samples, top_rows
    from embviz.report.sections import GALLERY_SIZE

    samples = load_samples(open_dataset(ds))
    return samples.ids[top_rows(samples.scores["label_issue_score"], GALLERY_SIZE)].tolist()


class _Gallery(HTMLParser):
    """The label-issue gallery's figures: sample id -> the saliency maps beside its image."""

    def __init__(self):
        super().__init__()
        self.figures: dict[int, list[dict]] = {}
        self._section = self._figure = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._section = a.get("data-section", self._section)
        if tag == "figure" and self._section == "label_issue_score":
            self._figure = int(a["data-id"])
            self.figures[self._figure] = []
        elif tag == "img" and self._figure is not None and a.get("class") == "heat":
            self.figures[self._figure].append(a)

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None


def _report(ds: Path, out: Path):
    result = write_report(ds, out)
    text = out.read_text()
    gallery = _Gallery()
    gallery.feed(text)
    return result, text, gallery.figures


def test_saliency_fills_the_cache_and_the_report_gallery(predicted, tmp_path, capsys):
    ds, _ = predicted
    gallery = _gallery_ids(ds)
    assert len(gallery) == 24  # the report's gallery size, on 48 scored samples

    # Before: the gallery has no maps and says how to add them.
    r, text, figures = _report(ds, tmp_path / "before.html")
    assert list(figures) == gallery and not any(figures.values())
    assert any(f"run 'embviz saliency {ds}'" in n for n in r.notes), r.notes
    assert "to add saliency maps" in text

    # Three samples from a text file with a comment and a blank line: computed, then cached.
    chosen = gallery[:3]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# worst label issues\n{chosen[0]}\n\n{chosen[1]}  # second\n{chosen[2]}\n")
    code, res, _ = _run(capsys, str(ds), "--ids-from", str(ids))
    assert code == 0 and res["samples"] == 3 and res["computed"] == 3 and res["cached"] == 0
    assert res["methods"] == ["gradcam"] and res["target"] == "top" and not res["failed"]
    assert len(list((ds / "cache" / "saliency").glob("*.png"))) == 3
    from embviz.explain import explainer_for

    explainer = explainer_for(open_dataset(ds))
    for sid in chosen:
        hit = explainer.cached(sid, method="gradcam")
        assert hit is not None and hit.cached and hit.label in {str(c) for c in CLASSES}
    assert explainer.cached(gallery[3], method="gradcam") is None
    code, res, _ = _run(capsys, str(ds), "--ids-from", str(ids))
    assert code == 0 and (res["computed"], res["cached"]) == (0, 3)

    # After: exactly those three figures hold a map, a decodable PNG named by method and class.
    r, text, figures = _report(ds, tmp_path / "after.html")
    assert {sid for sid, maps in figures.items() if maps} == set(chosen)
    for sid in chosen:
        (heat,) = figures[sid]
        assert heat["src"].startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(heat["src"].split(",", 1)[1])))
        assert png.format == "PNG" and min(png.size) >= 96
        assert re.fullmatch(r"gradcam · top prediction [037] \(p 0\.\d\d\)", heat["title"])
    assert "Saliency maps of 3 of 24 samples" in text
    assert not any("embviz saliency" in n for n in r.notes)

    # No options: the report's gallery, every figure of it (the three above are reused).
    code, res, _ = _run(capsys, str(ds))
    assert code == 0 and (res["samples"], res["computed"], res["cached"]) == (24, 21, 3)
    _, _, figures = _report(ds, tmp_path / "full.html")
    assert list(figures) == gallery and all(len(maps) == 1 for maps in figures.values())


def test_bad_ids_are_named(predicted, tmp_path, capsys):
    from embviz.pipeline.cli import _parser
    from embviz.saliency import METHODS

    ds, _ = predicted
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n\n2 # fine\nseven\n")
    code, res, err = _run(capsys, str(ds), "--ids-from", str(bad))
    assert code == 2 and res is None
    assert f"{bad}, line 4: 'seven' is not an integer sample id" in err
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("id,why\n1,ok\n90001,gone\n90002,gone\n")
    code, _, err = _run(capsys, str(ds), "--ids-from", str(unknown))
    assert code == 2 and f"{unknown}: 2 of 3 ids are not samples" in err and "90001, 90002" in err
    code, _, err = _run(capsys, str(ds), "--ids-from", str(tmp_path / "nope.txt"))
    assert code == 2 and "nope.txt: ids file does not exist" in err

    bare = Dataset.create(tmp_path / "bare", name="bare")
    w = bare.writer("samples")
    w.write_part(0, pa.table({"id": [1, 2], "label": ["a", "b"]}))
    w.commit()
    code, _, err = _run(capsys, str(bare.root))
    assert code == 2 and f"run 'embviz predict {bare.root}' first" in err

    # The command offers every method the library has, and only those.
    for method in METHODS:
        assert _parser().parse_args(["saliency", "d", "--method", method]).methods == [method]
    with pytest.raises(SystemExit):
        _parser().parse_args(["saliency", "d", "--method", "scorecam"])
    capsys.readouterr()


def test_top_label_issues_skips_a_missing_image(predicted, tmp_path, capsys):
    ds, imgs = predicted
    top = _gallery_ids(ds)[:2]
    uris = open_dataset(ds).read_ids("samples", top, ["uri"]).column("uri").to_pylist()
    gone = Path(uris[1])
    moved = gone.rename(tmp_path / gone.name)
    try:
        code, res, err = _run(
            capsys, str(ds), "--top-label-issues", "2", "--method", "eigencam", "--class", "label"
        )
        assert code == 0 and res["samples"] == 2 and res["computed"] == 1
        assert res["methods"] == ["eigencam"] and res["target"] == "label"
        assert list(res["failed"]) == [str(top[1])] and "cannot read its image" in str(
            res["failed"]
        )
        only = tmp_path / "only.txt"
        only.write_text(f"{top[1]}\n")
        code, res, err = _run(capsys, str(ds), "--ids-from", str(only), "--method", "eigencam")
        assert code == 1 and res["failed"] and "no map could be made" in err
    finally:
        moved.rename(gone)
    # The label's map is the one the report shows for that sample (its own label explained).
    _, _, figures = _report(ds, tmp_path / "r.html")
    titles = [m["title"] for m in figures[top[0]]]
    assert any(t.startswith("eigencam · its label ") for t in titles), titles
