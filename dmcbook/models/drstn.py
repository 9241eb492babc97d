"""Models of the drstn chapter (being written)."""
