"""Models of the gdfrnet chapter (being written)."""
