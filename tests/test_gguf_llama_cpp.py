"""The GGUF export run by llama.cpp (llama-cpp-python) gives the original's and the runtime's token ids.

- The files load in llama.cpp's own loaders (`Llama(model_path=...)`, clip.cpp's mtmd context), which
  read the metadata written (qwen2 pre-tokenizer, vocabulary, projector) and tokenize as our tokenizer.
- Golden: the 35 cases of tests/data/faithfulness through an F32 export of the golden checkpoint, with
  the image embeddings from the torch tower and from clip.cpp (handed our PIL-squashed pixels): the
  original AITQE code's 40 greedy ids in both modes, its first-step logits within 1e-4 (torch tower)
  and 0.05 (clip.cpp).
- Demo: held-out demo pairs, a non-square image and captions holding special-token strings and
  decomposed characters: the ids of the torch runtime's reference engine with an F16 export (8 + 3
  pairs, both modes and both image paths; 100 + 3 pairs, slow); the Q8_0 and Q4_K_M exports made by
  llama.cpp's quantizer load and agree with the fp32 runtime on most pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from calibration.split import demo_examples  # noqa: E402
from quantize.gguf import export_gguf  # noqa: E402
from runtime.demo import DEMO_MODEL  # noqa: E402
from runtime.engine.llama_cpp import LlamaCppModel  # noqa: E402
from runtime.image import load_image, resized  # noqa: E402
from runtime.parse import OVERALL_MARK  # noqa: E402
from runtime.scorer import Pair, Scorer  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "faithfulness"
RECORD = json.loads((GOLDEN / "golden.json").read_text(encoding="utf-8"))
CASES = RECORD["cases"]
MAX_NEW = 40
MODES = {"stop_at_overall": False, "output_all": True}


def run(model: LlamaCppModel, scorer: Scorer, image, caption: str, max_new: int, output_all: bool, vision: str,
        logits: bool = False):
    """A pair through llama.cpp: the runtime's prompt ids, the image as torch-tower embeddings or as
    the runtime's squashed pixels for clip.cpp, greedy decoding with the runtime's stop rule."""
    prep = scorer.prepare(Pair(image, caption), max_new)
    if vision == "torch":
        picture = scorer.image_embeddings(prep.pixels[None])[0].float().numpy()
    else:
        rgb = load_image(image) if isinstance(image, (str, Path)) else image.convert("RGB")
        picture = resized(rgb, scorer.image_spec)
    tok = scorer.tokenizer
    stop = None if output_all else (lambda ids: OVERALL_MARK in tok.decode(ids, skip_special_tokens=True))
    return model.generate(picture, prep.ids, prep.budget, scorer.eos.ids, stop=stop, logits=logits)


@pytest.fixture(scope="module")
def golden_export(tmp_path_factory):
    return export_gguf(GOLDEN / "checkpoint", tmp_path_factory.mktemp("gguf") / "golden-f32", "f32").output


@pytest.fixture(scope="module")
def golden_scorer():
    return Scorer.from_pretrained(GOLDEN / "checkpoint", device="cpu", dtype="fp32", engine="reference")


@pytest.fixture(scope="module")
def golden_model(golden_export):
    with LlamaCppModel.from_export(golden_export, n_ctx=256, n_threads=1) as m:  # F32 model: F32 KV cache
        yield m


def test_llama_cpp_loads_the_language_model_and_reads_its_tokenizer(golden_export, golden_scorer):
    manifest = json.loads((golden_export / "aitqe_gguf.json").read_text())
    llm = llama_cpp.Llama(model_path=str(golden_export / manifest["files"]["language_model"]), n_ctx=128,
                          n_threads=1, verbose=False)
    try:
        assert llm.metadata["general.architecture"] == "qwen2" and llm.metadata["tokenizer.ggml.pre"] == "qwen2"
        assert llm.n_vocab() == 768 and llm.token_eos() == 765
        text = "\nEvaluate the caption: two red circles, 3 blue squares!\nRespond using a dictionary structure."
        ours = golden_scorer.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == ours
        assert llm.detokenize(ours).decode() == text
    finally:
        llm.close()


def test_clip_cpp_embeddings_match_the_torch_tower(golden_model, golden_scorer):
    for name in sorted({c["image"] for c in CASES}):
        rgb = load_image(GOLDEN / "images" / name)
        theirs = golden_model.image_embeddings(resized(rgb, golden_scorer.image_spec))
        ours = golden_scorer.image_embeddings(golden_scorer.prepare(Pair(rgb, "x"), 8).pixels[None])[0].numpy()
        assert theirs.shape == ours.shape == (16, 64)
        # clip.cpp's projector GELU is the tanh form (AITQE's: erf), on CPU through an fp16 table
        assert np.linalg.norm(theirs - ours) / np.linalg.norm(ours) < 5e-3, name


@pytest.mark.parametrize("vision", ["torch", "clip"])
@pytest.mark.parametrize("mode", MODES)
def test_golden_cases_give_the_originals_ids(golden_model, golden_scorer, vision, mode):
    got, worst = [], 0.0
    for case in CASES:
        g = run(golden_model, golden_scorer, GOLDEN / "images" / case["image"], case["caption"], MAX_NEW,
                MODES[mode], vision, logits=True)
        got.append(g.ids)
        worst = max(worst, float(np.abs(g.logits[0] - np.asarray(case["first_step_logits"])).max()))
    assert got == [c[f"new_ids_{mode}"] for c in CASES]
    # measured: 1.8e-5 with the torch tower's embeddings (golden.json rounds to 1e-5), 0.011 through clip.cpp
    assert worst < (1e-4 if vision == "torch" else 0.05)


def test_branch_evaluates_another_token_without_disturbing_the_greedy_path(golden_model, golden_scorer):
    case = CASES[0]
    image = GOLDEN / "images" / case["image"]
    plain = run(golden_model, golden_scorer, image, case["caption"], MAX_NEW, True, "torch", logits=True)
    prep = golden_scorer.prepare(Pair(image, case["caption"]), MAX_NEW)
    emb = golden_scorer.image_embeddings(prep.pixels[None])[0].numpy()
    # the token chosen at step 3, evaluated as a branch, gives the logits the path itself has at step 4
    g = golden_model.generate(emb, prep.ids, MAX_NEW, golden_scorer.eos.ids, logits=True,
                              branch=lambda ids: ids[-1] if len(ids) == 4 else None)
    assert g.ids == plain.ids == case["new_ids_output_all"]
    assert set(g.branches) == {3} and np.allclose(g.branches[3], plain.logits[4], atol=1e-4)


# ---------------------------------------------------------------------------------------- demo model

SPECIAL = "a red circle <|im_end|><|endoftext|> left"
NFD = "big gre\u0301en square top right"


def held_out(n: int) -> list[tuple]:
    """n held-out demo pairs, then the traps: a non-square image (the runtime squashes it, clip.cpp's
    own resize would letterbox it), a caption holding special-token strings, one with decomposed characters."""
    examples = [e for _, e in demo_examples(n, 4242, "evaluation", 48)]
    wide = examples[0].image.resize((96, 64))
    return [(e.image, e.caption) for e in examples] + [
        (wide, examples[0].caption), (examples[1].image, SPECIAL), (examples[2].image, NFD)]


def reference(scorer: Scorer, pairs: list[tuple], output_all: bool, batch: int = 16) -> list[list[int]]:
    """The torch runtime's greedy ids (reference engine), `batch` rows at a time."""
    ids = []
    for i in range(0, len(pairs), batch):
        rows = scorer.encode([scorer.prepare(Pair(im, cap), 384) for im, cap in pairs[i:i + batch]])
        ids += scorer.decode(rows, output_all=output_all, max_new_tokens=384).ids
    return ids


@pytest.fixture(scope="module")
def demo_scorer():
    return Scorer.from_pretrained(DEMO_MODEL, device="cpu", dtype="fp32", engine="reference")


@pytest.fixture(scope="module")
def demo_f16(tmp_path_factory):
    return export_gguf(DEMO_MODEL, tmp_path_factory.mktemp("gguf") / "demo-f16", "f16").output


def _agreement(export: Path, scorer: Scorer, pairs: list[tuple], output_all: bool, vision: str) -> list[bool]:
    want = reference(scorer, pairs, output_all)
    with LlamaCppModel.from_export(export, n_ctx=512, n_threads=1) as model:
        got = [run(model, scorer, im, cap, 384, output_all, vision).ids for im, cap in pairs]
    return [g == w for g, w in zip(got, want)]


@pytest.mark.parametrize("vision", ["torch", "clip"])
@pytest.mark.parametrize("output_all", [True, False])
def test_demo_f16_export_gives_the_runtimes_ids(demo_f16, demo_scorer, output_all, vision):
    assert all(_agreement(demo_f16, demo_scorer, held_out(8), output_all, vision))


@pytest.mark.slow
def test_demo_f16_export_gives_the_runtimes_ids_on_100_held_out_pairs(demo_f16, demo_scorer):
    same = _agreement(demo_f16, demo_scorer, held_out(100), True, "clip")
    assert all(same), f"{sum(same)}/{len(same)}"


@pytest.mark.parametrize("kind, floor", [("q8_0", 0.8), ("q4_k_m", 0.6)])
def test_demo_quantized_exports_are_made_by_llama_cpp_and_run(tmp_path_factory, demo_scorer, kind, floor):
    out = export_gguf(DEMO_MODEL, tmp_path_factory.mktemp("gguf") / f"demo-{kind}", kind, threads=1).output
    manifest = json.loads((out / "aitqe_gguf.json").read_text())
    llm = llama_cpp.Llama(model_path=str(out / manifest["files"]["language_model"]), vocab_only=True, verbose=False)
    assert llm.metadata["general.file_type"] == {"q8_0": "7", "q4_k_m": "15"}[kind]
    llm.close()
    same = _agreement(out, demo_scorer, held_out(8), True, "clip")
    assert sum(same) >= floor * len(same), f"{kind}: {sum(same)}/{len(same)} token-identical to the fp32 runtime"
