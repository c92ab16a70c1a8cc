"""`--quiet`: stderr holds this program's own lines only (its one-line errors and summary), none of the
libraries' warnings, banners and progress bars (transformers, huggingface_hub, torch, torchao, GPTQModel,
tqdm).

Some libraries read their settings from the environment once, when they are imported, so a command
enters `quiet()` right after parsing its arguments, before it imports them; the environment is
inherited by the reader processes (`--workers`). On leaving, everything is as it was, except what a
library first imported inside the block read from the environment then (the command's process ends
there anyway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",               # tqdm reads TQDM_* at import: every library's bar
    "TORCH_CPP_LOG_LEVEL": "ERROR",    # torch's C++ warnings
    "PYTHONWARNINGS": "ignore",        # the reader processes' warnings
}


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """Within the block (when `on`): no library warning (Python's `warnings`, `logging` at WARNING and
    below: transformers, torchao, GPTQModel's banner), no library progress bar."""
    if not on:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in ENV}
    saved_level = logging.root.manager.disable
    os.environ.update(ENV)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(saved_level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
