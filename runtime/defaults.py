"""What the command-line parsers need before any model code loads, so that `--help` and a mistyped
flag answer at once, without importing torch: the engine names, the dtype names, the default token
budget. The modules that own them take them from here (tests/test_help.py holds the engine names to
the engine registry)."""

ENGINES = ("fast", "llama.cpp", "reference")  # runtime.engine's registered engines, sorted
DTYPE_NAMES = ("bf16", "fp16", "fp32")          # runtime.model.checkpoint.DTYPES
DEFAULT_MAX_NEW_TOKENS = 384


def default_device() -> str:
    """cuda when a GPU is visible, else cpu (imports torch: call it after parsing)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
