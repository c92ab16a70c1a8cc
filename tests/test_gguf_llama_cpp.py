"""The GGUF export run by llama.cpp (llama-cpp-python) gives the original's and the runtime's token ids.

- The files load in llama.cpp's own loaders (`Llama(model_path=...)`, clip.cpp's mtmd context), which
  read the metadata written (qwen2 pre-tokenizer, vocabulary, projector) and tokenize as our tokenizer.
- Golden: the 35 cases of tests/data/faithfulness through an F32 export of the golden checkpoint, with
  the image embeddings from the torch tower and from clip.cpp (handed our PIL-squashed pixels): the
  original AITQE code's 40 greedy ids in both modes, its first-step logits within 0.05.
- Demo: held-out demo pairs, a non-square image and captions holding special-token strings and
  decomposed characters: the ids of the torch runtime's reference engine, with an F16 export; the
  Q8_0 and Q4_K_M exports made by llama.cpp's quantizer run and are compared (slow).
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


def reference_ids(scorer: Scorer, image, caption: str, max_new: int, output_all: bool) -> list[int]:
    rows = scorer.encode([scorer.prepare(Pair(image, caption), max_new)])
    return scorer.decode(rows, output_all=output_all, max_new_tokens=max_new).ids[0]


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
    assert worst < 0.05


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


@pytest.fixture(scope="module")
def demo_pairs():
    examples = [e for _, e in demo_examples(8, 4242, "evaluation", 48)]
    pairs = [(e.image, e.caption) for e in examples]
    wide = examples[0].image.resize((96, 64))  # non-square: the runtime squashes it, clip.cpp would letterbox it
    return pairs + [(wide, examples[0].caption), (examples[1].image, SPECIAL), (examples[2].image, NFD)]


@pytest.fixture(scope="module")
def demo_scorer():
    return Scorer.from_pretrained(DEMO_MODEL, device="cpu", dtype="fp32", engine="reference")


@pytest.mark.slow
@pytest.mark.parametrize("output_all", [True, False])
def test_demo_f16_export_gives_the_runtimes_ids(tmp_path_factory, demo_pairs, demo_scorer, output_all):
    out = export_gguf(DEMO_MODEL, tmp_path_factory.mktemp("gguf") / "demo-f16", "f16").output
    want = [reference_ids(demo_scorer, im, cap, 384, output_all) for im, cap in demo_pairs]
    with LlamaCppModel.from_export(out, n_ctx=512, n_threads=1) as model:
        for vision in ("torch", "clip"):
            got = [run(model, demo_scorer, im, cap, 384, output_all, vision).ids for im, cap in demo_pairs]
            assert got == want, vision


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["q8_0", "q4_k_m"])
def test_demo_quantized_exports_are_made_by_llama_cpp_and_run(tmp_path_factory, demo_pairs, demo_scorer, kind):
    out = export_gguf(DEMO_MODEL, tmp_path_factory.mktemp("gguf") / f"demo-{kind}", kind, threads=2).output
    manifest = json.loads((out / "aitqe_gguf.json").read_text())
    llm = llama_cpp.Llama(model_path=str(out / manifest["files"]["language_model"]), vocab_only=True, verbose=False)
    assert llm.metadata["general.file_type"] == {"q8_0": "7", "q4_k_m": "15"}[kind]
    llm.close()
    want = [reference_ids(demo_scorer, im, cap, 384, True) for im, cap in demo_pairs]
    with LlamaCppModel.from_export(out, n_ctx=512, n_threads=1) as model:
        got = [run(model, demo_scorer, im, cap, 384, True, "clip").ids for im, cap in demo_pairs]
    agree = sum(g == w for g, w in zip(got, want)) / len(want)
    print(f"{kind}: {agree:.0%} of {len(want)} demo pairs token-identical to the fp32 runtime")
    assert agree >= (0.9 if kind == "q8_0" else 0.5)
