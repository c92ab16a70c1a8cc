"""Importing llama-cpp-python: a one-line error that says how to install it, and its logging quieted
(errors only, and without one spurious warning of a context of several rows)."""

from __future__ import annotations

import ctypes

from runtime.errors import InputError

INSTALL = "pip install 'aitqe-edge[llama]' (builds llama.cpp from source, about 10 CPU-minutes)"
_LOG: list = []  # the log callback installed (kept alive)
# llama.cpp warns when a unified KV cache holds more cells than the trained context, which several
# rows of at most n_ctx each (LlamaCppModel.set_lanes) always do; llama-cpp-python prints warnings as errors.
SPURIOUS = b"possible training context overflow"


def llama_cpp_module(verbose: bool = False):
    """The `llama_cpp` package with its logging quieted, or a one-line InputError saying how to install it."""
    try:
        import llama_cpp
        import llama_cpp._logger as logger
    except ImportError:
        raise InputError(f"llama-cpp-python is not installed; {INSTALL}") from None
    logger.set_verbose(verbose)
    if not _LOG:
        _LOG.append(_log_filter(llama_cpp, logger.llama_log_callback))
        llama_cpp.llama_log_set(_LOG[0], ctypes.c_void_p(0))
    return llama_cpp


def _log_filter(llama_cpp, forward):
    """llama-cpp-python's log callback, without the unified-cache warning of a context of several rows."""
    @llama_cpp.llama_log_callback
    def log(level: int, text: bytes, user_data) -> None:
        if SPURIOUS not in text:
            forward(level, text, user_data)

    return log
