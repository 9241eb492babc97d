"""Models of the dmcnet chapter (being written)."""
