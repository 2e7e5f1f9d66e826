"""The shipped YAML files (demo recipe, report settings example); installed as ``embviz.presets``."""
