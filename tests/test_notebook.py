"""The example notebook runs top to bottom in a real Jupyter kernel: explorer, points, deck."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_example_notebook_executes_and_reads_the_selection_back(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.delenv("EMBVIZ_EXAMPLE_DATASET", raising=False)
    nb = nbformat.read(ROOT / "examples" / "explore.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    text = "\n".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )
    found = re.search(r"selected (\d+) labels \['[^']+'\]", text)
    assert found, text
    assert int(found.group(1)) == 200
    # The explorer itself rendered as a Panel object (a widget view with a Bokeh model).
    displays = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "execute_result"
    ]
    assert any(
        "application/vnd.holoviews_load.v0+json" in d["data"] or "text/html" in d["data"]
        for d in displays
    )
    # embviz.points: a HoloViews layout rendered through Bokeh (not just its text repr).
    results = {cell.source.splitlines()[-1]: out for cell, out in _results(nb)}
    assert "application/vnd.holoviews_exec.v0+json" in results["by_label + by_split"]["data"]
    # embviz.deck: a deck.gl page inline (pydeck's iframe) and written to a file.
    assert "PointCloudLayer" in results["cloud"]["data"]["text/html"]
    assert re.search(r"wrote cloud\.html \d+\.\d MB", text), text
    # Offline: Panel's loader carries every script inline (no URL to fetch) and was published
    # once for the explorer; no output links a script or stylesheet on another host.
    loaders = [
        d["data"]["application/javascript"]
        for d in _outputs(nb)
        if "_bokeh_onload_callbacks" in d.get("data", {}).get("application/javascript", "")
    ]
    assert loaders
    for js in loaders:
        assert re.search(r"const js_urls = \[\s*\];", js) and re.search(r"css_urls = \[\s*\];", js)
    pages = [d["data"]["text/html"] for d in _outputs(nb) if "text/html" in d.get("data", {})]
    assert pages
    for page in pages:  # the explorer, the HoloViews layout, pydeck's page in an iframe
        found = REMOTE.search(html.unescape(page))
        assert found is None, found.group(0)


#: A script or stylesheet loaded from another host.
REMOTE = re.compile(r"<(script|link)[^>]*\s(src|href)=['\"]?https?://", re.IGNORECASE)


def _outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def _results(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                if out.get("output_type") == "execute_result":
                    yield cell, out
