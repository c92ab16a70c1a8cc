"""`--model ORG/NAME[@REVISION]`: a model on the Hugging Face Hub, fetched into its cache.

`resolve_model` turns what a user passed as `--model` into a folder: a local path as it is (its
errors stay `runtime.model.locate`'s), a Hub name through `huggingface_hub.snapshot_download`,
which keeps its cache (`HF_HOME`, `HF_HUB_CACHE`), honours `HF_HUB_OFFLINE` and `HF_ENDPOINT`,
resumes an interrupted download and shows its progress bar. Only the files the model needs are
fetched: first the marker that says what the repo is (`runtime.model.locate.KINDS`), then what that
kind reads (a checkpoint's config, tokenizer, weights and vision config; a bundle's or a GGUF
export's listed files). Every failure is one line (InputError) that says what to do.
"""

from __future__ import annotations

import functools
import glob
import json
import re
import sys
from contextlib import nullcontext
from pathlib import Path, PurePosixPath

from runtime.errors import InputError
from runtime.model.locate import CONFIG, EXPORT_INFO, GGUF_INFO, MANIFEST, kind_of

NAME = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[^@\s]+))?")
MARKERS = [MANIFEST, EXPORT_INFO, GGUF_INFO, CONFIG]
TOKENIZER = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
             "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja"]
CHECKPOINT = [CONFIG, "generation_config.json", "preprocessor_config.json", "processor_config.json", *TOKENIZER]
WEIGHTS = {"safetensors": ["model*.safetensors", "model.safetensors.index.json"],
           "bin": ["pytorch_model*.bin", "pytorch_model.bin.index.json"]}


def hub_name(arg: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `arg` names a Hub model; None when it is a local path: one
    that exists, even in part (its first folder), or that starts like a path (., /, ~)."""
    if arg.startswith((".", "/", "~")) or Path(arg).exists() or Path(arg.split("/", 1)[0]).exists():
        return None
    m = NAME.fullmatch(arg)
    return (m["repo"], m["revision"]) if m else None


def resolve_model(arg: str, *, quiet: bool = False) -> Path:
    """The folder `--model ARG` names: a local path as it is, or `ORG/NAME[@REVISION]` from the Hub
    (its cache first); a one-line InputError when it cannot be had."""
    name = hub_name(str(arg))
    return Path(arg) if name is None else _download(*name, quiet)


def _json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # the loader reads it again and says what is wrong
    return found if isinstance(found, dict) else {}


def _inside(rel: object) -> bool:
    return isinstance(rel, str) and bool(rel) and not PurePosixPath(rel).is_absolute() and ".." not in rel.split("/")


def _weights(repo: str, commit: str) -> list[str]:
    """safetensors when the repo has them (the cached file listing says), else pytorch_model*.bin."""
    from fnmatch import fnmatch

    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        files = [f.path for f in get_cached_repo_tree(repo, revision=commit)]
    except CachedRepoTreeNotFoundError:
        return WEIGHTS["safetensors"]
    has_safetensors = any(fnmatch(f, WEIGHTS["safetensors"][0]) for f in files)
    return WEIGHTS["safetensors" if has_safetensors or not files else "bin"]


def needed_files(folder: Path, repo: str, label: str) -> list[str]:
    """allow_patterns for the rest of the repo, from the markers already in `folder`."""
    kind = kind_of(folder)
    if kind == "bundle":
        listed = _json(folder / MANIFEST).get("files")
        return [MANIFEST, *(glob.escape(f) for f in listed if _inside(f))] if isinstance(listed, dict) else [MANIFEST]
    if kind == "gguf":
        listed = _json(folder / GGUF_INFO).get("files")
        parts = [f for f in listed.values() if _inside(f)] if isinstance(listed, dict) else []
        return [GGUF_INFO, *(p for f in parts for p in (glob.escape(f), glob.escape(f) + "/*"))]
    if kind == "checkpoint":
        vision = _json(folder / CONFIG).get("vision_model_name_or_path")
        own = [f"{glob.escape(vision)}/{n}" for n in (CONFIG, "preprocessor_config.json")] if _inside(vision) else []
        return [*CHECKPOINT, *own, *_weights(repo, folder.name)]
    if kind == "export":
        return []  # a LLaVA export: no command here loads one, locate says so
    raise InputError(f"{label}: the repository holds no {CONFIG}, {MANIFEST} or {GGUF_INFO} at its top; it is "
                     "not an AITQE checkpoint, bundle or GGUF export, check the name")


def _reason(e: Exception, repo: str, revision: str | None) -> str:
    """What went wrong in a Hub download, and what to do, in one line."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, IncompleteSnapshotError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    cache, hub = constants.HF_HUB_CACHE, constants.ENDPOINT
    if isinstance(e, GatedRepoError):
        return f"a gated repository on {hub}; accept its terms on its page, then log in (hf auth login, or HF_TOKEN)"
    if isinstance(e, RepositoryNotFoundError):
        return (f"no such model on {hub} (or a private one); check the name, or log in (hf auth login, or "
                "HF_TOKEN) for a private model")
    if isinstance(e, RevisionNotFoundError):
        return f"{repo} has no revision {revision!r}; check the branch, tag or commit after @"
    if isinstance(e, IncompleteSnapshotError):
        return (f"only part of it is in the cache ({cache}) and the Hub cannot be reached; rerun with network "
                "access to finish the download")
    if isinstance(e, LocalEntryNotFoundError):
        if constants.is_offline_mode():
            return (f"not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set; run once without "
                    "HF_HUB_OFFLINE to download it, or pass a local checkpoint folder")
        return (f"{hub} cannot be reached and the model is not in the cache ({cache}); check the network "
                "(HF_ENDPOINT, proxy), or pass a local checkpoint folder")
    detail = " ".join(str(e).split())[:200] or "no message"
    if isinstance(e, HfHubHTTPError):
        return f"the Hub ({hub}) answered: {detail}; try again later"
    return (f"the download failed ({type(e).__name__}: {detail}); rerun to resume it, and check the network "
            f"and the free space of {cache}")


@functools.cache
def _download(repo: str, revision: str | None, quiet: bool) -> Path:
    """The snapshot folder of `repo` at `revision` holding the files the model needs (once a process)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, logging as hub_logging

    label = f"--model {repo}" + (f"@{revision}" if revision else "")
    level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # its warnings ("no files matched") would break the one-line errors
    try:
        with disable_progress_bars():  # a few small marker files
            folder = Path(snapshot_download(repo, revision=revision, allow_patterns=MARKERS))
        patterns = needed_files(folder, repo, label)
        if patterns:
            with disable_progress_bars() if quiet else nullcontext():
                snapshot_download(repo, revision=folder.name, allow_patterns=patterns)  # the commit just resolved
    except InputError:
        raise
    except Exception as e:  # network, HTTP, disk: all said in one line
        raise InputError(f"{label}: {_reason(e, repo, revision)}") from None
    finally:
        hub_logging.set_verbosity(level)
    if not quiet:
        print(f"{label}: files in {folder}", file=sys.stderr)
    return folder
