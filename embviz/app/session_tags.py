"""The tag actions of a :class:`~embviz.app.session.Session`: its tag store, polling, tagging.

A mixin, so the session stays the one owner of its state (``tags_version``, ``detail``) while
its module stays small; it uses only the session's own attributes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TagActions"]


class TagActions:
    """Tags of a session's dataset (mixed into :class:`~embviz.app.session.Session`)."""

    _tags = None  # the process's tag store, opened on first use
    _tags_coming = None  # a version whose tag column is being built on the task pool

    def tags(self):
        """The dataset's tag store, shared by every session of the process."""
        if self._tags is None:
            from .tagcolumn import tag_store

            self._tags = tag_store(self._ds.root)
        return self._tags

    def tags_of(self, sample_id: int) -> str:
        """The open sample's tags as one line ("" when none or unreadable)."""
        try:
            tags = self.tags().of(sample_id)
        except Exception:  # an unreadable tag folder must not break the detail panel
            return ""
        return "; ".join(
            f"{t['tag']}: {t['value']}" if t.get("value") else str(t["tag"]) for t in tags
        )

    def poll_tags(self) -> bool:
        """Look for tags written by other sessions or processes; True when they changed.

        In a server the new version's tag column is built on the task pool first (0.2-0.7 s
        with ~200 tags on 1M points, once per process and version), then :attr:`tags_version`
        changes on the session's thread, where the maps then find the column built: a tag
        write never stalls the event loop every session shares. Elsewhere it changes at once.
        """
        try:
            version = self.tags().version
        except Exception:  # a tag folder being written or compacted: next time
            return False
        if version in (self.tags_version, self._tags_coming):
            return False
        if self.doc is None:
            self.tags_version = version
            return True
        self._tags_coming = version
        wanted = [(self.projection, 2)]
        if self.projection3d and self.dims == "3D":
            wanted.append((self.projection3d, 3))

        def build():
            from .filters import summarize
            from .tagcolumn import tag_column

            for projection, dims in wanted:
                tagged = tag_column(self.base_store(projection, dims), self.tags(), version)
                if dims == 2:
                    summarize(tagged)  # the tag filter's new counts

        def show(_result=None):
            if self._tags_coming == version:
                self._tags_coming = None
            self.tags_version = version

        self.in_background(build, show, show)  # a failed build: the maps build it themselves
        return True

    def tag(self, ids, tag: str, value: str | None = None, *, remove: bool = False) -> int:
        """Add (or remove) ``tag`` on samples ``ids`` as the logged-in user; returns how many."""
        import panel as pn

        ids = np.asarray(ids, dtype=np.int64)
        user = str(pn.state.user) if pn.state.user else None
        store = self.tags()
        if remove:
            store.remove(ids, tag, user=user)
        else:
            store.add(ids, tag, value, user=user)
        self.poll_tags()
        if self.detail in set(ids.tolist()):
            self.refresh_detail()
        return len(ids)
