"""Models of the resneskt chapter (being written)."""
