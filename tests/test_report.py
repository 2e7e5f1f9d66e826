"""``embviz report``: one self-contained HTML file, its index, the CLI and scheduled reports."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from embviz.config import load_report_settings
from embviz.dataset import open_dataset
from embviz.errors import ConfigError
from embviz.report import report_path, update_index, write_report

ROOT = Path(__file__).resolve().parent.parent
#: Data that runs script if any part of the report puts it into HTML unescaped.
HOSTILE_LABEL = "<script>alert(1)</script>"
HOSTILE_SPLIT = "prod \"<img src=x onerror='alert(2)'>&"
HOSTILE_NAME = "synth</title><script>alert(3)</script>"
OUTLIERS = [17, 4000, 9999, 123, 19_000, 5, 777, 15_000, 3333, 8]  # highest score first
ISSUES = [42, 4242, 18_181, 7, 9000]
GROUPS = {7: [100, 200, 300, 400], 3: [1000, 1001, 1002], 11: [50, 60]}  # largest first
URI = re.compile(r"data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A 20,000-point synthetic dataset: label, split train/test/prod, sprites, synth.2d/3d."""
    from embviz.pipeline.synth import synth

    return Path(synth(tmp_path_factory.mktemp("plain") / "s", points=20_000, progress=False).root)


@pytest.fixture(scope="module")
def scored(plain, tmp_path_factory):
    """``plain`` with score columns planted in a new samples version, and hostile names."""
    root = tmp_path_factory.mktemp("scored") / "s"
    shutil.copytree(plain, root, ignore=shutil.ignore_patterns("cache"))
    ds = open_dataset(root)
    table = ds.read_arrow("samples")
    n = table.num_rows
    assert table.column("id").to_pylist() == list(range(n))  # rows are ids below
    rng = np.random.default_rng(1)
    outlier = rng.random(n) * 0.5
    outlier[OUTLIERS] = np.arange(len(OUTLIERS), 0, -1) + 1.0
    issue = rng.random(n) * 0.5
    issue[ISSUES] = np.arange(len(ISSUES), 0, -1) + 1.0
    issue[9] = np.nan  # missing scores never rank first
    group = np.full(n, -1, dtype=np.int64)
    for gid, members in GROUPS.items():
        group[members] = gid
    group[12_345] = 99  # a group of one is no duplicate
    label = np.array(table.column("label").to_pylist(), dtype=object)
    label[rng.choice(n, 300, replace=False)] = HOSTILE_LABEL
    split = np.array(table.column("split").to_pylist(), dtype=object)
    split[split == "prod"] = HOSTILE_SPLIT
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(label))
    table = table.set_column(table.schema.get_field_index("split"), "split", pa.array(split))
    table = table.append_column("outlier_score", pa.array(outlier, pa.float32()))
    table = table.append_column("label_issue_score", pa.array(issue))
    table = table.append_column("duplicate_group", pa.array(group))
    w = ds.writer("samples")
    w.write_part(0, table, id_range=(0, n - 1))
    w.commit({"test": "planted scores"})
    ds.update_manifest(lambda m: m.__setitem__("name", HOSTILE_NAME))
    return root


class _Cells(HTMLParser):
    """Collects ``data-*`` attributes and text of elements, and images' sources."""

    def __init__(self):
        super().__init__()
        self.cells: list[tuple[dict, str]] = []
        self.images: list[str] = []
        self.figures: list[tuple[str, str]] = []  # (section, sample id)
        self.groups: list[str] = []
        self._open: list[dict] = []
        self._section = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        if "data-section" in a:
            self._section = a["data-section"]
            if "data-group" in a:
                self.groups.append(a["data-group"])
        if tag == "figure" and "data-id" in a:  # a sample's card (not a chart's figure)
            self.figures.append((self._section, a["data-id"]))
        if tag == "td":
            self._open.append(a)

    def handle_data(self, data):
        if self._open:
            self.cells.append((self._open[-1], data))

    def handle_endtag(self, tag):
        if tag == "td" and self._open:
            self._open.pop()


def parse(text: str) -> _Cells:
    p = _Cells()
    p.feed(text)
    return p


def expected_counts(root) -> dict[tuple[str, str], int]:
    t = open_dataset(root).read_arrow("samples", columns=["label", "split"])
    got = t.group_by(["label", "split"]).aggregate([([], "count_all")]).to_pylist()
    counts = {(r["label"], r["split"]): r["count_all"] for r in got}
    for (label, split), c in list(counts.items()):
        counts[(label, "*")] = counts.get((label, "*"), 0) + c
        counts[("*", split)] = counts.get(("*", split), 0) + c
    counts[("*", "*")] = t.num_rows
    return counts


def test_report_holds_maps_counts_galleries_and_escapes_everything(scored, tmp_path):
    r = write_report(scored, tmp_path / "r.html", seed=0)
    text = (tmp_path / "r.html").read_text()
    page = parse(text)

    # Images: two overview maps, a density map per split, sprite thumbnails; all decode.
    kinds = []
    for src in page.images:
        mime, payload = URI.fullmatch(src).groups()
        img = Image.open(io.BytesIO(base64.b64decode(payload)))
        img.load()
        kinds.append((mime, img.size))
    assert kinds.count(("image/png", (900, 640))) == 2
    assert kinds.count(("image/png", (450, 320))) == 3
    assert sum(m == "image/webp" for m, _ in kinds) >= 10
    assert all(src.startswith("data:") for src in page.images)

    # Every count cell equals the samples table's count; totals too.
    want = expected_counts(scored)
    got = {
        (a["data-label"], a["data-split"]): int(v.replace(",", ""))
        for a, v in page.cells
        if "data-label" in a
    }
    zeros = {k for k, v in got.items() if v == 0}
    assert {k: v for k, v in got.items() if k not in zeros} == want
    assert r.rows == 20_000 and sum(r.labels.values()) == 20_000 == sum(r.splits.values())
    assert r.labels[HOSTILE_LABEL] == 300

    # Galleries: the planted outliers and label issues in score order; the largest groups.
    in_section = lambda s: [int(i) for sec, i in page.figures if sec == s]  # noqa: E731
    assert in_section("outlier_score")[: len(OUTLIERS)] == OUTLIERS
    assert in_section("label_issue_score")[: len(ISSUES)] == ISSUES
    assert 9 not in in_section("label_issue_score")
    assert [int(g) for g in page.groups] == list(GROUPS)
    assert sorted(in_section("duplicate_group")) == sorted(sum(GROUPS.values(), []))
    assert "3 groups hold 9 samples" in text

    # Split shift: prod over-represents a few clusters, test follows train.
    assert set(r.shift) == {"test", HOSTILE_SPLIT}
    assert r.shift[HOSTILE_SPLIT] > r.shift["test"] + 0.05
    assert 0.4 < r.shift["test"] < 0.6

    # Nothing from the data reaches the page unescaped; the page has no script at all.
    assert "<script" not in text.lower() and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=&#x27;alert(2)&#x27;&gt;&amp;" in text
    assert "synth&lt;/title&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in text
    manifest = re.search(r"<pre>(.*?)</pre>", text, re.S).group(1)
    assert json.loads(html.unescape(manifest))["name"] == HOSTILE_NAME


def test_galleries_only_when_scores_exist(plain, tmp_path):
    r = write_report(plain, tmp_path / "plain.html")
    text = (tmp_path / "plain.html").read_text()
    assert 'class="gallery"' not in text and "<figure" not in text
    for column in ("outlier_score", "label_issue_score", "duplicate_group"):
        assert any(column in note for note in r.notes), r.notes
    assert r.sections == ("maps", "counts", "galleries", "drift", "manifest")
    assert r.projection == "synth.2d" and r.points == 20_000  # the 2D map, not synth.3d


def test_index_lists_reports_newest_first_with_escaped_relative_links(plain, tmp_path):
    from embviz.app.schedule import ReportJob

    out = tmp_path / "reports"
    job = ReportJob(str(plain), str(out))
    first = job()
    assert job() is None, "a run while the previous one works is skipped"
    assert first.result(timeout=120) is not None and job.runs == 1
    time.sleep(1.1)  # the next report gets a later timestamp
    second = job.run()
    odd = out / '<b>odd" name.html'
    time.sleep(1.1)  # and the odd one a later one still (timestamps have whole seconds)
    write_report(plain, odd)
    (out / "notes.html").write_text("<p>not a report</p>")
    index = update_index(out).read_text()
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', index)
    assert [text for _, text in links] == [
        "&lt;b&gt;odd&quot; name.html",
        Path(second.path).name,
        Path(first.result().path).name,
    ]
    assert all("/" not in href and ":" not in href for href, _ in links)
    assert re.fullmatch(r"s-\d{8}T\d{6}Z\.html", Path(second.path).name)
    # Two reports in one second do not overwrite each other.
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    report_path(out, "a b/c", when).write_text("")
    assert report_path(out, "a b/c", when).name == "a-b-c-20260102T030405Z-2.html"


@pytest.mark.browser
def test_report_opens_offline_in_chromium(browser, scored, tmp_path):
    path = tmp_path / "r.html"
    write_report(scored, path)
    page = browser.new_page()
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    decoded = page.evaluate(
        "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
    )
    scripts = page.evaluate("document.scripts.length")
    legend = page.locator(".legend").first.inner_text()
    page.close()
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
    assert len(decoded) > 10 and all(decoded)
    assert scripts == 0 and not dialogs
    assert HOSTILE_LABEL in legend  # shown as text


def test_cli_report_end_to_end(plain, tmp_path, capsys):
    from embviz.pipeline.cli import main

    out = tmp_path / "daily" / "r.html"
    cmd = [sys.executable, "-m", "embviz.pipeline.cli", "report", str(plain), "--out", str(out)]
    done = subprocess.run([*cmd, "--png", "--index"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == str(out)
    assert out.read_text().startswith("<!DOCTYPE html>")
    for name in ("r-label.png", "r-split.png"):
        with Image.open(out.parent / name) as img:
            assert img.format == "PNG" and img.size == (900, 640)
    # An index embviz wrote is kept up to date without --index.
    assert main(["report", str(plain), "--out", str(out.parent / "r2.html")]) == 0
    assert "r2.html" in (out.parent / "index.html").read_text()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing" in err
    assert main(["report", str(plain), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_report_settings_load_strictly(tmp_path):
    shipped = load_report_settings(ROOT / "config" / "reports.yaml")
    assert shipped.dataset and shipped.out_dir and (shipped.cron or shipped.period)
    cases = [
        ("dataset: d\nout_dir: o\nperiod: 1h\nschedule: x\n", "unknown key 'schedule'"),
        ("dataset: d\nout_dir: o\n", "exactly one of 'cron' and 'period'"),
        ("dataset: d\nout_dir: o\nperiod: 1h\ncron: '0 6 * * *'\n", "exactly one"),
        ("dataset: d\nout_dir: o\nperiod: soon\n", "period: 'soon' is not a period"),
        ("dataset: d\nout_dir: o\nperiod: 0s\n", "is zero"),
        ("dataset: d\nout_dir: o\ncron: every day\n", "cron: 'every day' is not a cron"),
        ("dataset: d\nout_dir: o\nperiod: 1h\nwidth: wide\n", "width: expected int"),
        ("out_dir: o\nperiod: 1h\n", "missing required key 'dataset'"),
    ]
    for text, message in cases:
        path = tmp_path / "r.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)) as err:
            load_report_settings(path)
        assert str(path) in str(err.value)
    path.write_text("dataset: d\nout_dir: o\nperiod: 1h30m\npng: true\n")
    assert load_report_settings(path).period == "1h30m"


def test_schedule_reports_registers_once(plain, tmp_path):
    import panel as pn

    from embviz.app.schedule import cancel_reports, schedule_reports

    job = schedule_reports(plain, out_dir=tmp_path / "a", period="1h", name="t-report")
    try:
        assert any(k.endswith("_t-report") for k in pn.state._scheduled)
        # Every session runs the app script again: the same settings are the same task.
        assert schedule_reports(plain, out_dir=tmp_path / "a", period="1h", name="t-report") is job
        with pytest.raises(ValueError, match="already exists with other settings"):
            schedule_reports(plain, out_dir=tmp_path / "b", period="1h", name="t-report")
        with pytest.raises(ConfigError, match="exactly one"):
            schedule_reports(plain, out_dir=tmp_path / "a", name="other")
        daily = schedule_reports(plain, out_dir=tmp_path / "c", cron="0 6 * * *", name="t-cron")
        assert any(k.endswith("_t-cron") for k in pn.state._scheduled) and daily is not job
    finally:
        cancel_reports("t-report")
        cancel_reports("t-cron")
    assert not any(k.endswith(("_t-report", "_t-cron")) for k in pn.state._scheduled)


APP = """
import sys

from embviz.app.schedule import schedule_reports
from embviz.app.server import explorer_page

dataset, out_dir = sys.argv[1], sys.argv[2]
schedule_reports(dataset, out_dir=out_dir, period="2s")
explorer_page(dataset).servable()
"""


@pytest.mark.browser
def test_scheduled_reports_run_while_a_session_keeps_rendering(browser, plain, tmp_path):
    from conftest import PanelServer, wait_until

    app = tmp_path / "app.py"
    app.write_text(APP)
    out = tmp_path / "scheduled"
    log_path = tmp_path / "serve.log"
    with PanelServer([plain, out], log_path, app=app) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            status = page.get_by_text(re.compile("points in view")).first
            page.goto(server.url)
            status.wait_for(timeout=90_000)
            box = page.locator("canvas").first.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.55)
            changes: list[str] = []

            def zoom_once() -> bool:
                """Zoom in or out (in turn): a new view, so a new status line within 15 s; then
                whether enough views were drawn and a scheduled report and its index exist."""
                before = status.inner_text()
                page.mouse.wheel(0, -240 if len(changes) % 2 == 0 else 240)
                changes.append(
                    wait_until(
                        lambda: (text := status.inner_text()) != before and text,
                        15,
                        "the status line to answer a zoom",
                        page=page,
                    )
                )
                return (
                    len(changes) >= 4
                    and any(out.glob("s-*.html"))
                    and (out / "index.html").exists()
                )

            wait_until(zoom_once, 40, "a scheduled report while the session zooms", page=page)
        finally:
            page.close()
    reports = sorted(out.glob("s-*.html"))
    index = (out / "index.html").read_text()
    assert reports[-1].name in index or reports[-2].name in index
    assert "Traceback" not in log_path.read_text()


@pytest.mark.browser
def test_report_of_the_demo_dataset(browser, demo_dataset, tmp_path):
    """The issue's check on the real MNIST demo: images present, counts match, offline."""
    path = tmp_path / "demo.html"
    r = write_report(demo_dataset, path, png=True)
    text = path.read_text()
    page_cells = parse(text)
    sizes = []
    for src in page_cells.images:
        mime, payload = URI.fullmatch(src).groups()
        img = Image.open(io.BytesIO(base64.b64decode(payload)))
        img.load()
        sizes.append((mime, img.size))
    assert sizes.count(("image/png", (900, 640))) == 2  # the label and split maps
    assert len(r.pngs) == 2 and all(Path(p).exists() for p in r.pngs)
    want = expected_counts(demo_dataset)
    got = {
        (a["data-label"], a["data-split"]): int(v.replace(",", ""))
        for a, v in page_cells.cells
        if "data-label" in a
    }
    assert {k: v for k, v in got.items() if v} == want
    assert r.rows == 5000 and sorted(r.labels) == [str(d) for d in range(10)]
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    decoded = page.evaluate(
        "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
    )
    page.close()
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert decoded and all(decoded)
