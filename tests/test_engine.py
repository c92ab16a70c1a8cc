"""A row's bookkeeping (runtime.engine.text): where a row ends and what its text is."""

from __future__ import annotations

from pathlib import Path

from runtime.engine import StopRule
from runtime.engine.text import decode_text, finished, row_text
from runtime.model.checkpoint import load_tokenizer

TOKENIZER = load_tokenizer(Path(__file__).parent / "data" / "faithfulness" / "checkpoint")
EOS = TOKENIZER.convert_tokens_to_ids("<|endoftext|>")
IM_END = TOKENIZER.convert_tokens_to_ids("<|im_end|>")


def ids(text: str) -> list[int]:
    return TOKENIZER(text, add_special_tokens=False).input_ids


def test_text_drops_special_tokens_and_ids_past_the_tokenizer():
    assert decode_text(TOKENIZER, ids("a dog") + [IM_END] + ids(" runs") + [len(TOKENIZER) + 5]) == "a dog runs"


def test_a_row_ends_after_its_end_of_generation_id():
    seq = ids('{"Recaption": "a"') + [EOS] + ids("padding after")
    assert finished(TOKENIZER, seq, StopRule((EOS,))) == seq[:len(ids('{"Recaption": "a"')) + 1]
    assert row_text(TOKENIZER, seq, StopRule((EOS,))) == '{"Recaption": "a"'


def test_a_row_ends_at_the_token_that_completes_the_mark():
    head = ids('{"Overall Score": "7<Overall')
    seq = head + ids('>", "Overall Explanation": "x"}')
    rule = StopRule((EOS,), "<Overall>")
    end = finished(TOKENIZER, seq, rule)
    assert "<Overall>" in decode_text(TOKENIZER, end) and "<Overall>" not in decode_text(TOKENIZER, end[:-1])
    assert len(end) > len(head)
    assert row_text(TOKENIZER, seq, rule) == '{"Overall Score": "7<Overall>'
    assert finished(TOKENIZER, seq, StopRule((EOS,))) == seq  # output-all: no mark
