"""quantize package (see README)."""
