"""The compiled decode step: one graph per slot bucket, all compiled in warm-up, none after (a smaller
batch decodes on views of the same cache), with the eager step's ids; for the 16-bit backbone and for
each quantized method that says it compiles (`Method.compiles`)."""

from __future__ import annotations

import pytest

from calibration.split import demo_pairs
from runtime.demo import DEMO_MODEL
from runtime.engine import StopRule
from runtime.engine.fast import FastDecoder, _buckets
from runtime.formats import METHODS, fp8, method
from runtime.parse import OVERALL_MARK
from runtime.scorer import Scorer
from tests.test_engine_fast import rows_of


@pytest.fixture(scope="module")
def demo():
    return Scorer.from_pretrained(DEMO_MODEL, device="cpu")


def check_compiled(scorer: Scorer, max_new: int = 48) -> None:
    """The compiled step's ids are the eager step's, with one graph per bucket of 2 slots, none after."""
    rows = rows_of(scorer, demo_pairs(3, 1000, "evaluation"), max_new)
    stop = StopRule(scorer.eos.ids, OVERALL_MARK)
    eager = FastDecoder(scorer.llm, scorer.tokenizer, slots=2).decode(rows, stop, max_new).ids
    fast = FastDecoder(scorer.llm, scorer.tokenizer, slots=2, compile=True)
    assert fast.decode(rows, stop, max_new).ids == eager
    assert fast.compiles == len(_buckets(2))
    fast.set_slots(1)  # a smaller batch: views of the same cache, graphs already compiled
    assert fast.decode(rows, stop, max_new).ids == eager
    assert fast.compiles == len(_buckets(2))
    assert fast.step.cache.k.shape[3] > scorer.llm.config.max_position_embeddings  # allocated once, never regrown


def test_compiles_once_per_bucket(demo):
    check_compiled(demo)


def test_which_methods_compile():
    """Those whose kernels trace with no graph break; bnb-int8's outlier split and GPTQ's Marlin do not."""
    assert {name for name in METHODS if method(name).compiles} == {"bf16", "fp16", "fp8", "bnb-nf4"}


def test_bnb_nf4_compiles_once_per_bucket(tmp_path):
    """bitsandbytes' 4-bit ops have fake kernels: its CPU path compiles with the eager step's ids."""
    from quantize.__main__ import main as quantize

    assert quantize(["--model", str(DEMO_MODEL), "--method", "bnb-nf4", "--output", str(tmp_path / "nf4")]) == 0
    nf4 = Scorer.from_pretrained(tmp_path / "nf4", device="cpu")
    assert nf4.compilable
    check_compiled(nf4)


@pytest.mark.slow
def test_fp8_compiles_once_per_bucket(monkeypatch):
    """torchao's float8 backbone (its hardware gate lifted: torch._scaled_mm runs on CPU) compiles with
    the eager step's ids. Slow: float8 tensor graphs take minutes to compile on a CPU."""
    from torchao.quantization import quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    scorer = Scorer.from_pretrained(DEMO_MODEL, device="cpu", dtype="bf16")
    fp8.convert(scorer.llm, fp8.Fp8Config())
    check_compiled(scorer, max_new=32)
