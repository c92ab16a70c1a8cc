"""quantize package (see README)."""

import runtime  # noqa: F401  first: it quiets torchao's import notices before transformers loads it
