"""embviz."""
