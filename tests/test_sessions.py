"""Sessions share one copy of the data and nothing else: one person's filter, colouring,
selection, view or difference view never shows in another's explorer."""

from __future__ import annotations

import numpy as np


def test_sessions_share_the_points_and_keep_their_own_state(demo_dataset):
    from embviz.app.explorer import Explorer

    a, b = Explorer(demo_dataset), Explorer(demo_dataset)
    assert a.session.store is b.session.store  # one in-memory copy per process
    assert a.map is not b.map and a.map.renderer is not b.map.renderer
    before = (
        b.session.color_by,
        dict(b.session.filters),
        list(b.session.view),
        b.session.difference,
        b.map.mask,
    )

    a.session.filters = {"label": ["3"]}
    a.session.color_by = "split"
    a.select(np.arange(10, 60))
    a.compare.show_difference = True
    a.map.refresh(wait=True)

    assert (
        b.session.color_by,
        dict(b.session.filters),
        list(b.session.view),
        b.session.difference,
        b.map.mask,
    ) == before
    assert len(b.grid.ids) == 0 and b.map.highlight_rows is None
    assert a.map.last.frame.points < b.map.last.frame.points  # a's filter, not b's
    assert b.map.refresh(wait=True).frame.points == b.session.store.n
