"""The explorer component: a server-side datashaded map of one projection, coloured by a column."""

from __future__ import annotations

from pathlib import Path

import colorcet
import datashader as dsh
import holoviews as hv
import panel as pn
import param
from holoviews.operation.datashader import datashade, dynspread

from embviz.dataset import open_dataset

from .frames import projection_frame

__all__ = ["Explorer"]


class Explorer(pn.viewable.Viewer):
    """A dataset's 2D projections rendered on the server by Datashader."""

    dataset = param.String(doc="Path of the embviz dataset directory shown.")
    projection = param.Selector(objects=[], doc="Which 2D projection table is drawn.")
    color_by = param.Selector(
        default="label", objects=["label", "split"], doc="Category column that colours the points."
    )

    def __init__(self, dataset: str | Path, **params):
        ds = open_dataset(dataset)
        flat = [p for p in ds.projections if ds.meta(f"projections/{p}").get("dims", 2) == 2]
        # Neighbour-preserving maps first: they are what people open the explorer to see.
        rank = {"umap": 0, "pacmap": 1, "tsne": 2, "pca": 3}
        flat.sort(key=lambda p: (rank.get(ds.meta(f"projections/{p}").get("method"), 4), p))
        if not flat:
            raise ValueError(f"{dataset}: no 2D projection yet; run 'embviz reduce {dataset}'")
        super().__init__(dataset=str(dataset), **params)
        self._ds = ds
        self.param.projection.objects = flat
        if self.projection not in flat:
            self.projection = flat[0]

    def _frame(self):
        key = (self.dataset, self.projection)
        return pn.state.as_cached(
            f"embviz-frame-{key}", projection_frame, root=self.dataset, projection=self.projection
        )

    @param.depends("projection", "color_by")
    def _plot(self):
        frame = self._frame()
        cats = list(frame[self.color_by].cat.categories)
        key = dict(
            zip(cats, colorcet.b_glasbey_category10[: len(cats)] or ["#1f77b4"], strict=False)
        )
        points = hv.Points(frame, kdims=["x", "y"], vdims=[self.color_by])
        shaded = dynspread(
            datashade(points, aggregator=dsh.count_cat(self.color_by), color_key=key),
            threshold=0.9,
            max_px=3,
        )
        # HoloViews builds the categorical legend of a datashaded image itself.
        return shaded.opts(responsive=True, min_height=600, legend_position="right")

    def __panel__(self):
        rows = self._ds.table("samples")["rows"]
        info = pn.pane.Markdown(
            f"**{self._ds.name}** · {rows:,} samples · embeddings: {', '.join(self._ds.embeddings) or 'none'}",
            sizing_mode="stretch_width",
        )
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.projection),
            pn.widgets.Select.from_param(self.param.color_by),
        )
        return pn.Column(
            info,
            controls,
            pn.pane.HoloViews(self._plot, sizing_mode="stretch_both", min_height=600),
            sizing_mode="stretch_both",
        )
