"""bench package (see README)."""
