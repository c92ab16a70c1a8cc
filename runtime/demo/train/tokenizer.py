"""The demo's tokenizer: a byte-level BPE in Qwen2's own form (its normalizer and split pattern,
special tokens only), trained with the `tokenizers` library on the given texts.

Built as transformers' `Qwen2Tokenizer` from the trained vocabulary and merges, so the slow tokenizer
of older transformers (vocab.json + merges.txt, as the original AITQE code loads it) reads it the same
way. Random test checkpoints use it too.
"""

from __future__ import annotations

import json

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>"]  # besides <|endoftext|>, Qwen2's end of text


def train_tokenizer(texts: list[str], vocab_size: int = 512) -> Qwen2Tokenizer:
    """BPE ids first (`vocab_size` at most), then <|endoftext|> and SPECIAL_TOKENS."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, bos_token=None, padding_side="left")
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return tok
