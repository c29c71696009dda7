"""Faces: detection, alignment, paste-back, parsing and identity."""
