"""Saliency overlays beside the report's label issues, read from the cache ``embviz saliency`` fills.

A report never computes a map (that needs the model, seconds a sample): it asks the dataset's
:class:`~embviz.explain.Explainer` for maps already cached, for every method and both classes
``embviz saliency --class`` can explain, and lays each over the sample's thumbnail.
"""

from __future__ import annotations

import numpy as np

from embviz.errors import DatasetError, EmbvizError

from .data import Samples
from .html import Markup, data_uri, tag, void

__all__ = ["OPACITY", "TARGETS", "overlays", "target_label"]

#: The classes ``embviz saliency --class`` explains: ``top`` (the top prediction) or ``label``
#: (the sample's own label: why the model disagrees with it shows beside a label issue).
TARGETS = ("top", "label")
#: Opacity of a map over its thumbnail (the app's explain panel starts at 0.6 as well).
OPACITY = 0.6
_SAYS = {"top": "top prediction", "label": "its label"}


def target_label(target: str, label: str | None) -> str | None:
    """The ``label`` :meth:`~embviz.explain.Explainer.explain` takes for ``target`` (one of
    :data:`TARGETS`) and a sample whose label is ``label`` (None: unlabelled).

    Raises :class:`~embviz.errors.DatasetError` for ``label`` on an unlabelled sample.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown saliency class {target!r}; valid: {', '.join(TARGETS)}")
    if target == "top":
        return None
    if label is None:
        raise DatasetError("it has no label to explain")
    return label


def overlays(
    ds, samples: Samples, rows: np.ndarray, thumbs: dict[int, bytes], notes: list[str]
) -> tuple[dict[int, list[Markup]], Markup]:
    """The cached maps of the samples at ``rows`` as markup, and a line to put above them.

    Returns ``({sample id: [one block per cached map]}, line)``: the line counts the samples
    with maps, or (when there are none) says how to make them and is added to ``notes``.
    ``thumbs`` maps ``thumb_id`` to the thumbnail each map is laid over.
    """
    root = ds.root
    if not ds.has("predictions"):
        notes.append(
            f"No saliency maps: run 'embviz predict {root}' then 'embviz saliency {root}' "
            "to add them beside the label issues."
        )
        return {}, tag("p", notes[-1], class_="note")
    from embviz.explain import explainer_for
    from embviz.saliency import METHODS

    try:
        explainer = explainer_for(ds)
    except (EmbvizError, KeyError) as exc:  # predictions a later embviz wrote differently
        notes.append(f"Saliency maps left out: cannot read the predictions ({exc}).")
        return {}, tag("p", notes[-1], class_="note")
    names, codes = samples.labels.names, samples.labels.codes
    labelled = "label" in samples.columns
    found: dict[int, list[Markup]] = {}
    for row in np.asarray(rows).tolist():
        sid = int(samples.ids[row])
        label = names[codes[row]] if labelled else None
        tid = int(samples.thumb_ids[row]) if samples.thumb_ids is not None else -1
        shown = set()  # (method, class): the top prediction may be the label, one map then
        for target in TARGETS:
            if target == "label" and label not in explainer.classes:
                continue  # unlabelled, or a label the classifier never learned
            wanted = None if target == "top" else label
            for method in METHODS:
                hit = explainer.cached(sid, method=method, label=wanted)
                if hit is not None and (method, hit.label) not in shown:
                    shown.add((method, hit.label))
                    found.setdefault(sid, []).append(_block(hit, target, thumbs.get(tid)))
    if not found:
        notes.append(f"No saliency maps cached: run 'embviz saliency {root}' to add saliency maps.")
        return found, tag("p", notes[-1], class_="note")
    line = (
        f"Saliency maps of {len(found):,} of {len(rows):,} samples (cached by 'embviz "
        f"saliency'), laid over the image: bright = what made the model say that class."
    )
    return found, tag("p", line, class_="meta")


def _block(hit, target: str, thumb: bytes | None) -> Markup:
    """One map over its thumbnail, the method and the class it explains named under it."""
    text = f"{hit.method} · {_SAYS[target]} {hit.label} (p {hit.score:.2f})"
    under = void("img", src=data_uri(thumb), alt="") if thumb else ""
    heat = void(
        "img",
        src=data_uri(hit.png),
        alt=f"{hit.method} map of class {hit.label}",
        title=text,
        class_="heat",
        style=f"opacity:{OPACITY}" if thumb else None,
    )
    return tag("div", tag("div", under, heat, class_="stack"), tag("span", text), class_="sal")
