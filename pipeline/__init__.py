"""Batch pipeline steps and the ``embviz`` command line; installed as ``embviz.pipeline``."""
