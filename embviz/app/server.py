"""Serve the explorer for a dataset with ``panel serve`` semantics from Python."""

from __future__ import annotations

from pathlib import Path

__all__ = ["explorer_page", "serve"]


def explorer_page(dataset: str | Path):
    """The explorer page (a Panel template) for ``dataset``."""
    import holoviews as hv
    import panel as pn

    from .explorer import Explorer

    hv.extension("bokeh")
    pn.extension(sizing_mode="stretch_width")
    explorer = Explorer(dataset)
    return pn.template.FastListTemplate(title=f"embviz · {explorer._ds.name}", main=[explorer])


def serve(
    dataset: str | Path, *, port: int = 5006, address: str = "localhost", show: bool = False
) -> None:
    """Serve the explorer for ``dataset`` at ``http://address:port/explorer`` until interrupted."""
    import panel as pn

    from embviz.dataset import open_dataset

    open_dataset(dataset)  # fail now, with the dataset's own message, rather than per session
    pn.serve(
        {"explorer": lambda: explorer_page(dataset)},
        port=port,
        address=address,
        show=show,
        websocket_origin=[f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"],
        title="embviz",
    )
