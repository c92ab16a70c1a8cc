"""The fast engine against the reference engine (transformers' generate): the same token ids for the
golden checkpoint and held-out demo pairs, in both modes, whatever the slot count and arrival
order; its stop rule on token ids against the tokenizer's own decoding; the expected score."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from calibration.split import demo_pairs
from runtime.demo import DEMO_MODEL
from runtime.engine import StopRule
from runtime.engine.fast import FastDecoder
from runtime.engine.reference import ReferenceDecoder
from runtime.engine.text import Pieces, Watcher, decode_text, finished
from runtime.parse import OVERALL_MARK
from runtime.scorer import Pair, Scorer
from runtime.scores import Scores, expected_score

GOLDEN = Path(__file__).parent / "data" / "faithfulness"
MODES = {"stop": OVERALL_MARK, "all": None}


def rows_of(scorer: Scorer, pairs: list[Pair], max_new: int) -> list[torch.Tensor]:
    return scorer.encode([scorer.prepare(p, max_new) for p in pairs])


def reference(scorer: Scorer) -> ReferenceDecoder:
    return ReferenceDecoder(scorer.llm, scorer.tokenizer, scorer.pad_token_id)


def check_same(scorer: Scorer, rows: list[torch.Tensor], mark: str | None, max_new: int, slots: list[int],
               budgets: list[int] | None = None) -> None:
    stop, scores = StopRule(scorer.eos.ids, mark), Scores.of(scorer.tokenizer)
    ref = reference(scorer).decode(rows, stop, max_new, budgets, scores)
    order = list(range(len(rows)))
    random.Random(len(rows)).shuffle(order)
    for n in slots:
        got = FastDecoder(scorer.llm, scorer.tokenizer, slots=n).decode(
            [rows[i] for i in order], stop, max_new, budgets and [budgets[i] for i in order], scores)
        assert [got.ids[order.index(i)] for i in range(len(rows))] == ref.ids, f"slots={n}"
        assert [got.texts[order.index(i)] for i in range(len(rows))] == ref.texts
        for i in range(len(rows)):
            a, b = ref.expected[i], got.expected[order.index(i)]
            assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)


@pytest.fixture(scope="module")
def golden():
    return Scorer.from_pretrained(GOLDEN / "checkpoint", device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def demo():
    return Scorer.from_pretrained(DEMO_MODEL, device="cpu")


@pytest.mark.parametrize("mode", MODES)
def test_golden_checkpoint_same_ids(golden, mode):
    images = sorted((GOLDEN / "images").iterdir())
    pairs = [Pair(img, caption) for img in images for caption in ("a dog on a beach", "", "Überraschung 🎉")]
    check_same(golden, rows_of(golden, pairs, 40), MODES[mode], 40, slots=[1, 4, 32])


@pytest.mark.parametrize("mode", MODES)
def test_demo_pairs_same_ids(demo, mode):
    rows = rows_of(demo, demo_pairs(24, 1000, "evaluation"), 384)
    check_same(demo, rows, MODES[mode], 384, slots=[3, 8])


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_200_held_out_demo_pairs_same_ids(demo, mode):
    rows = rows_of(demo, demo_pairs(200, 7, "evaluation"), 384)
    check_same(demo, rows, MODES[mode], 384, slots=[13, 64])


def test_rows_with_their_own_budgets_leave_early(demo):
    """Continuous batching: rows of very different lengths share 2 slots; each is its own."""
    rows = rows_of(demo, demo_pairs(9, 1000, "evaluation"), 384)
    check_same(demo, rows, None, 384, slots=[2], budgets=[1, 300, 2, 40, 1, 120, 3, 7, 250])


@pytest.mark.slow
def test_compiled_step_same_ids(demo):
    """torch.compile of the decode step (what CUDA runs, with CUDA graphs there) on this CPU."""
    rows = rows_of(demo, demo_pairs(6, 1000, "evaluation"), 64)
    stop = StopRule(demo.eos.ids, None)
    ref = reference(demo).decode(rows, stop, 64)
    assert FastDecoder(demo.llm, demo.tokenizer, slots=2, compile=True).decode(rows, stop, 64).ids == ref.ids


@pytest.mark.parametrize("model", ["golden", "demo"])
def test_stop_on_token_ids_is_where_the_decoded_text_holds_the_mark(model, golden, demo):
    """For random id sequences rich in the mark's pieces, the watcher stops exactly where the shortest
    prefix whose `tokenizer.decode` holds the mark ends (the reference's rule)."""
    tok = (golden if model == "golden" else demo).tokenizer

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    marks = [enc("<Overall>"), enc("<") + enc("Over") + enc("all") + enc(">"), enc('9<Overall>"'),
             enc("<Overall") + enc('>", "'), enc("<<") + enc("Overall>>")]
    others = list(range(0, len(tok) + 3, 7)) + tok.all_special_ids + enc("<Overal l>") + enc("Overall")
    rng = random.Random(0)
    stop = StopRule((), OVERALL_MARK)
    seen = 0
    for _ in range(3000):
        mark = list(rng.choice(marks))
        if rng.random() < 0.3:  # a broken mark: one piece missing
            del mark[rng.randrange(len(mark))]
        seq = [rng.choice(others) for _ in range(rng.randint(0, 6))] + mark + \
            [rng.choice(others) for _ in range(rng.randint(0, 6))]
        watcher = Watcher(Pieces(tok), OVERALL_MARK)
        end = next((k + 1 for k, t in enumerate(seq) if watcher.add(t)), len(seq))
        assert end == len(finished(tok, seq, stop)), seq
        seen += OVERALL_MARK in decode_text(tok, seq)
    assert 1000 < seen < 3000  # the mark occurs, split in many ways, and sometimes does not


def test_expected_score_by_hand():
    one_hot = [[float(d == k) for d in range(10)] for k in range(10)]
    assert expected_score(one_hot[9], 0.3) == 9
    assert expected_score(one_hot[1], 1.0) == 10 and expected_score(one_hot[1], 0.0) == 1
    half = [0.5 * (a + b) for a, b in zip(one_hot[9], one_hot[1])]
    assert expected_score(half, 0.5) == pytest.approx(0.5 * 9 + 0.5 * 5.5)
    assert expected_score([2 * x for x in half], 0.5) == pytest.approx(7.25)  # renormalized


def test_verdicts_carry_expected_scores(demo):
    """The verdict's expected overall score, recomputed here from the model's own logits."""
    pair = demo_pairs(1, 1000, "evaluation")[0]
    v = demo.score(pair.image, pair.caption)
    prep = demo.prepare(pair, 384)
    row = demo.encode([prep])[0]
    stop = StopRule(demo.eos.ids, OVERALL_MARK)
    ids = reference(demo).decode([row], stop, 384).ids[0]
    tok = demo.tokenizer
    digits = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    k = next(i for i in range(len(ids)) if tok.decode(ids[:i]).endswith('"Overall Score": "'))
    embed = demo.llm.get_input_embeddings()

    def last_logits(tail: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            x = torch.cat([row, embed(torch.tensor(tail))])[None]
            return demo.llm(inputs_embeds=x).logits[0, -1].softmax(-1)

    p = last_logits(ids[:k])[digits]
    q = last_logits(ids[:k] + [digits[1]])[digits[0]].item()
    p = p / p.sum()
    by_hand = sum(d * p[d].item() for d in range(10) if d != 1) + p[1].item() * (1 + 9 * q)
    assert v.overall_expected == pytest.approx(by_hand, abs=1e-3)
    assert v.overall_score is not None and abs(v.overall_expected - v.overall_score) < 10


def test_quantized_backbones_may_compile_as_their_method_says(demo, tmp_path):
    """What `--compile auto` compiles on CUDA: a 16-bit backbone, and a quantized one whose method
    compiles (tests/test_engine_compile.py), not one whose method does not."""
    from quantize.__main__ import main as quantize
    from runtime.scorer import Scorer

    assert demo.compilable
    assert quantize(["--model", str(DEMO_MODEL), "--method", "bnb-int8", "--vision", "torch",
                     "--output", str(tmp_path / "int8")]) == 0
    assert not Scorer.from_pretrained(tmp_path / "int8", device="cpu").compilable


@pytest.mark.parametrize("method", ["bnb-nf4", "gptq-int4"])
def test_quantized_backbones_same_text_with_both_engines(method, tmp_path):
    """The fast engine runs quantized layers through their own kernels: same verdict text as the reference."""
    from quantize.__main__ import main as quantize

    extra = ["--calibration-samples", "16"] if method.startswith("gptq") else []
    assert quantize(["--model", str(DEMO_MODEL), "--method", method, "--output", str(tmp_path / method), *extra]) == 0
    pairs = demo_pairs(8, 1000, "evaluation")
    texts = {engine: [v.raw_text for v in Scorer.from_pretrained(tmp_path / method, engine=engine).score_many(
        pairs, batch_size=4, quiet=True)] for engine in ("fast", "reference")}
    assert texts["fast"] == texts["reference"] and all(texts["fast"])


def test_freed_slots_are_prefilled_together(demo, monkeypatch):
    """Slots freed while others decode wait for each other (refill=2): one prefill forward fills two
    of them, not one each; the reference's ids."""
    from runtime.engine.step import Step

    rows = rows_of(demo, demo_pairs(9, 1000, "evaluation"), 384)
    budgets = [1, 300, 2, 40, 1, 120, 3, 7, 250]
    stop = StopRule(demo.eos.ids, None)
    groups: list[int] = []
    prefill = Step.prefill
    monkeypatch.setattr(Step, "prefill", lambda self, rows, slots: groups.append(len(rows)) or prefill(self, rows, slots))
    got = FastDecoder(demo.llm, demo.tokenizer, slots=4, refill=2).decode(rows, stop, 384, budgets)
    assert got.ids == reference(demo).decode(rows, stop, 384, budgets).ids
    assert groups[0] == 4 and sum(groups) == len(rows) and all(g >= 2 for g in groups[:-1]), groups
