"""AITQE's prompt, built structurally: the caption is only ever text.

LLM input = [image embeddings (T tokens)] + tokens(IMAGE_SEPARATOR) + tokens(PROMPT with the
caption); no BOS, no chat template, no EOS. This is what the original's processor builds: it puts
one "\n" after the image's end marker and tokenizes it as a segment of its own, then tokenizes the
prompt text (which starts with its own "\n") as one segment, so two separate "\n" tokens stand
between the image and "Evaluate". Ordinary captions give the original's ids exactly; special-token
strings inside a caption are split into plain text (`split_special_tokens=True`), and nothing in a
caption is ever parsed for file references.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import InputError

IMAGE_SEPARATOR = "\n"
PROMPT = ("\nEvaluate the caption: {caption}\nif score is low, give a short description of the image."
          "\nRespond using a dictionary structure.")


@dataclass(frozen=True)
class PromptIds:
    ids: list[int]
    truncated: bool  # the caption was cut to fit the context


def encode_prompt(tokenizer, caption: str, offsets: bool = False):
    """The tokenizer's encoding of the PROMPT segment with the caption (ids, and character offsets if
    asked); the prompt's ids are `separator_ids(tokenizer)` followed by these."""
    text = PROMPT.format_map({"caption": caption})
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=offsets)


def separator_ids(tokenizer) -> list[int]:
    """The ids of the segment between the image embeddings and the prompt text."""
    return tokenizer(IMAGE_SEPARATOR, add_special_tokens=False)["input_ids"]


def _encode(tokenizer, caption: str) -> list[int]:
    return separator_ids(tokenizer) + encode_prompt(tokenizer, caption)["input_ids"]


def prompt_ids(tokenizer, caption: str, max_tokens: int) -> PromptIds:
    """Token ids of the text part of the prompt, at most `max_tokens` long. An empty or blank
    caption is scored as it is (it is the pair that most needs a recaption)."""
    if not isinstance(caption, str):
        raise InputError(f"caption is {type(caption).__name__}, not text; pass the caption as a string")
    try:
        caption.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("caption is not valid Unicode text (lone surrogate or undecodable bytes); "
                         "pass UTF-8 text") from None
    ids = _encode(tokenizer, caption)
    if len(ids) <= max_tokens:
        return PromptIds(ids, False)
    fixed = len(_encode(tokenizer, "")) + 2  # template tokens, plus a margin for merges at the cut
    if max_tokens <= fixed:
        raise InputError(f"the context has room for only {max_tokens} prompt tokens; "
                         "lower --max-new-tokens")
    enc = tokenizer(caption, add_special_tokens=False, split_special_tokens=True,
                    return_offsets_mapping=True)
    keep = max_tokens - fixed
    while keep > 0:
        cut = caption[: enc["offset_mapping"][keep - 1][1]]
        ids = _encode(tokenizer, cut)
        if len(ids) <= max_tokens:
            return PromptIds(ids, True)
        keep -= len(ids) - max_tokens
    raise InputError("caption could not be truncated to fit the context; lower --max-new-tokens")
