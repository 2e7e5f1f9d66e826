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
from conftest import PanelServer

pytestmark = pytest.mark.browser
STATUS = re.compile(r"of 5,000 points in view")


@pytest.fixture(scope="module")
def dataset(demo_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("curate-browser") / "demo"
    shutil.copytree(demo_dataset, root, ignore=shutil.ignore_patterns("cache", "tags", "reports"))
    return root


@pytest.fixture(scope="module")
def server(dataset, tmp_path_factory):
    with PanelServer(dataset, tmp_path_factory.mktemp("serve") / "serve.log") as s:
        yield s


def wait_until(page, check, what: str, timeout_ms: int = 30_000):
    waited = 0
    while waited < timeout_ms:
        if check():
            return
        page.wait_for_timeout(250)
        waited += 250
    raise AssertionError(f"timed out waiting for {what}")


def choose(page, css: str, value: str) -> None:
    page.locator(f".{css} select").first.select_option(value)


def download(page, what: str, fmt: str) -> bytes:
    choose(page, "embviz-export-what", what)
    page.locator(".embviz-export-format button", has_text=fmt).first.click()
    page.wait_for_timeout(500)  # the new choice reaches the server before the click
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
    page.goto(server.url)
    page.get_by_text(STATUS).first.wait_for(timeout=90_000)

    # Box-select part of the map.
    page.get_by_title("Box Select").first.click()
    box = page.locator("canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=6)
    page.mouse.move(box["x"] + box["width"] * 0.65, box["y"] + box["height"] * 0.65, steps=6)
    page.mouse.up()
    selected = page.get_by_text(re.compile(r"^[\d,]+ selected$")).first

    def count() -> int:
        return int(selected.inner_text().split()[0].replace(",", "")) if selected.count() else 0

    wait_until(page, lambda: count() > 0, "the selection")
    n = count()
    assert n > 12

    # Tag the whole selection "review".
    choose(page, "embviz-tag", "review")
    page.locator(".embviz-add-tag button").first.click()
    message = page.locator(".embviz-curate-message div").last
    wait_until(page, lambda: "Tagged" in message.inner_text(), "the tag message")
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
    wait_until(page, lambda: results.count() > 0, "similar samples")
    captions = page.locator(".embviz-grid-caption")
    wait_until(page, lambda: captions.count() > 0, "result captions")
    d = [float(captions.nth(i).inner_text().split("=")[1]) for i in range(captions.count())]
    assert d == sorted(d)
    page.screenshot(path=str(artifacts / "curate_2_similar.png"), full_page=True)
    assert np.isfinite(d).all()
    page.close()
    assert not errors, errors
