"""Rendering without a UI: curve-ordered point stores, 2D frames (Datashader) and 3D samples."""
