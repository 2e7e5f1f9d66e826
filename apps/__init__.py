"""Panel entry scripts, served by path (``panel serve``); installed as ``embviz.apps``, never imported."""
