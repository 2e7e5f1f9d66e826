"""Curation in a real browser on a copy of the demo: box-select, tag the selection, export it,
and find similar samples; the downloaded files hold exactly the selected ids."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from conftest import (
    PanelServer,
    drag_select,
    map_box,
    open_explorer,
    selected_count,
    show_tab,
    wait_until,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def dataset(demo_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("curate-browser") / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache", "tags", "reports"))
    return root


@pytest.fixture(scope="module")
def server(dataset, tmp_path_factory):
    with PanelServer(dataset, tmp_path_factory.mktemp("serve") / "serve.log") as s:
        yield s


def choose(page, css: str, value: str) -> None:
    page.locator(f".{css} select").first.select_option(value)


def download(page, what: str, fmt: str) -> bytes:
    choose(page, "embviz-export-what", what)
    # The choices and the click travel over one websocket, in order: the server applies the
    # choices before it answers the click (the file name below shows it did).
    page.locator(".embviz-export-format button", has_text=fmt).first.click()
    with page.expect_download(timeout=30_000) as info:
        page.locator(".embviz-download a, .embviz-download button").first.click()
    path = info.value.path()
    assert info.value.suggested_filename.endswith(f".{fmt}")
    with open(path, "rb") as fh:
        return fh.read()


def test_select_tag_export_and_find_similar(browser, server, dataset, artifacts):
    from embviz.tags import TagStore

    page = browser.new_page(viewport={"width": 1600, "height": 1200}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_explorer(page, server.url)

    # Box-select part of the map.
    box = map_box(page)
    corners = [
        (box["x"] + box["width"] * f, box["y"] + box["height"] * f) for f in (0.3, 0.5, 0.65)
    ]
    drag_select(page, "Box Select", corners)
    n = wait_until(lambda: selected_count(page), what="the selection", page=page)
    assert n > 12

    # Tag the whole selection "review".
    show_tab(page, "Curate")
    choose(page, "embviz-tag", "review")
    page.locator(".embviz-add-tag button").first.click()
    message = page.locator(".embviz-curate-message div").last
    wait_until(lambda: "Tagged" in message.inner_text(), what="the tag message", page=page)
    assert f"on {n:,} samples" in message.inner_text()
    page.screenshot(path=str(artifacts / "curate_1_tagged.png"), full_page=True)
    tagged = set(TagStore(dataset).ids("review").tolist())
    assert len(tagged) == n  # stored at once, in the dataset

    # Export the selection: exactly the selected ids, as Parquet and as CSV.
    got = pq.read_table(io.BytesIO(download(page, "grid samples", "parquet")))
    assert set(got.column("id").to_numpy().tolist()) == tagged and got.num_rows == n
    got_csv = pcsv.read_csv(io.BytesIO(download(page, "grid samples", "csv")))
    assert set(got_csv.column("id").to_numpy().tolist()) == tagged
    # The tag list holds those ids with the tag.
    tags = pq.read_table(io.BytesIO(download(page, "tags", "parquet"))).to_pandas()
    assert set(tags.loc[tags["tag"] == "review", "id"]) == tagged

    # Find samples similar to the selection: the grid shows results, nearest first.
    page.locator(".embviz-similar-grid button").first.click()
    results = page.get_by_text(re.compile(r"^[\d,]+ results$")).first
    wait_until(lambda: results.count() > 0, what="similar samples", page=page)
    captions = page.locator(".embviz-grid-caption")
    wait_until(lambda: captions.count() > 0, what="result captions", page=page)
    d = [float(captions.nth(i).inner_text().split("=")[1]) for i in range(captions.count())]
    assert d == sorted(d)
    page.screenshot(path=str(artifacts / "curate_2_similar.png"), full_page=True)
    assert np.isfinite(d).all()
    page.close()
    assert not errors, errors
