"""The report's "How the representation changes" section: per projection series, its quality
curve (:func:`embviz.evolution.quality_curve`, drawn by HoloViews' matplotlib backend into a PNG)
and the numbers behind it as a table.

It reads what ``embviz reduce --series`` stored and computes nothing itself; a dataset without a
projection series gets no section.
"""

from __future__ import annotations

from .html import Markup, data_uri, join, tag, void

__all__ = ["MAX_SERIES", "curve_png", "section"]

#: Most series shown (the others are named in a note).
MAX_SERIES = 8


def curve_png(ds, series_name: str) -> bytes:
    """The quality curve of projection series ``series_name`` as PNG bytes.

    Drawn with HoloViews' matplotlib backend (the page runs no scripts). Bokeh's plotting is
    loaded first so that, in a process that had no backend yet (the app's, running scheduled
    reports), Bokeh stays the current one and the app's styling still applies to it.
    """
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (first: it stays the current backend)
    import holoviews.plotting.mpl  # noqa: F401

    from embviz.evolution import quality_curve

    figure = quality_curve(ds, series_name, backend="matplotlib").opts(
        {
            "Overlay": {"fig_inches": (5.4, 3.6), "legend_position": "bottom_right"},
            "Layout": {"sublabel_format": "", "fig_inches": (11, 4)},
        },
        backend="matplotlib",
    )
    data, _ = hv.Store.renderers["matplotlib"](figure, fmt="png", dpi=80)
    return data


def _number(value) -> str:
    return "" if value is None else f"{float(value):.3f}"


def section(ds, notes: list[str]) -> Markup | None:
    """Per projection series: its quality curve and a table (member, k-NN accuracy in the
    embedding and in the map, trustworthiness, median jump). None when there is no series."""
    from embviz.evolution import series_quality
    from embviz.series import list_series

    every = list_series(ds, "projections")
    if not every:
        return None
    names = sorted(every)
    if len(names) > MAX_SERIES:
        notes.append(f"Series left out of the report (most {MAX_SERIES}): {names[MAX_SERIES:]}")
        names = names[:MAX_SERIES]
    intro = (
        "Per member of each series (training checkpoints or layers, projected by "
        "'embviz reduce --series'): k-NN label accuracy in the embedding and in the map, the "
        "map's trustworthiness, and how far points moved from the previous member, in units "
        "of their neighbourhood's size (median)."
    )
    parts = [tag("p", intro, class_="meta")]
    head = ["#", "member", "k-NN (embedding)", "k-NN (map)", "trustworthiness", "jump"]
    for name in names:
        rows = series_quality(ds, name)
        members = every[name]
        align = (ds.meta(members[0].key).get("alignment") or {}).get("method", "")
        png = curve_png(ds, name)
        figure = tag(
            "figure",
            void("img", src=data_uri(png), alt=f"quality per member of series {name}"),
            class_="map",
            data_series=name,
        )
        body = join(
            tag(
                "tr",
                join(
                    tag("td", c)
                    for c in (
                        r["index"],
                        r["member"],
                        _number(r["knn_embedding"]),
                        _number(r["knn_map"]),
                        _number(r["trustworthiness"]),
                        _number(r["jump"]),
                    )
                ),
            )
            for r in rows
        )
        table = tag(
            "table",
            tag("thead", tag("tr", join(tag("th", h) for h in head))),
            tag("tbody", body),
        )
        caption = f"{members[0].kind}, {len(rows)} members, aligned by {align or 'unknown'}"
        parts.append(
            join(
                [
                    tag("h3", name),
                    tag("p", caption, class_="meta"),
                    tag("div", figure, class_="maps"),
                    table,
                ]
            )
        )
    return join(parts)
