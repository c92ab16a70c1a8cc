"""Our own vision tower beside a GGUF export (`quantize.export --format gguf --with-vision torch,onnx`):
`--vision-backend torch|onnx` runs it instead of clip.cpp and feeds its embeddings to llama.cpp as
input embeddings; the same ids as the original (35 golden cases, both modes, both towers) and the
torch runtime's verdicts on held-out demo pairs with the traps (non-square image, special-token
strings, decomposed characters); an export without that tower is refused in one line.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
pytest.importorskip("onnxruntime")

from quantize.gguf import export_gguf  # noqa: E402
from runtime.demo import DEMO_MODEL  # noqa: E402
from runtime.errors import InputError  # noqa: E402
from runtime.score import main as score_main  # noqa: E402
from runtime.scorer import Pair, Scorer  # noqa: E402
from tests.test_gguf_llama_cpp import CASES, GOLDEN, MAX_NEW, MODES, demo_scorer, held_out  # noqa: E402,F401
from tests.test_gguf_scorer import _same_verdicts  # noqa: E402

BACKENDS = ("torch", "onnx")


@pytest.fixture(scope="module")
def golden_towers(tmp_path_factory):
    return export_gguf(GOLDEN / "checkpoint", tmp_path_factory.mktemp("gguf") / "golden-f32", "f32",
                       vision=BACKENDS).output


@pytest.fixture(scope="module")
def demo_towers(tmp_path_factory):
    return export_gguf(DEMO_MODEL, tmp_path_factory.mktemp("gguf") / "demo-f16", "f16", vision=BACKENDS).output


def test_the_manifest_lists_the_towers(golden_towers):
    m = json.loads((golden_towers / "aitqe_gguf.json").read_text())
    assert [(v["format"], v["dtype"], v["path"]) for v in m["vision"]] == \
        [("torch", "bf16", "vision-torch"), ("onnx", "fp32", "vision-onnx")]  # torch: the checkpoint's own dtype
    assert (m["files"]["vision_torch"], m["files"]["vision_onnx"]) == ("vision-torch", "vision-onnx")


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_cases_with_our_tower_give_the_originals_ids(golden_towers, backend):
    s = Scorer.from_pretrained(golden_towers, threads=1, vision_backend=backend, device="cpu")
    for mode, output_all in MODES.items():
        got = []
        for case in CASES:
            rows = s.encode([s.prepare(Pair(GOLDEN / "images" / case["image"], case["caption"]), MAX_NEW)])
            got += s.decode(rows, output_all=output_all, max_new_tokens=MAX_NEW).ids
        assert got == [c[f"new_ids_{mode}"] for c in CASES], mode


@pytest.fixture(scope="module")
def demo_pairs():
    return [Pair(im, cap, id=k) for k, (im, cap) in enumerate(held_out(8))]


@pytest.fixture(scope="module")
def torch_verdicts(demo_scorer, demo_pairs):  # noqa: F811
    return {output_all: demo_scorer.score_batch(demo_pairs, output_all=output_all) for output_all in (False, True)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_demo_pairs_with_our_tower_give_the_torch_verdicts(demo_towers, demo_pairs, torch_verdicts, backend):
    ours = Scorer.from_pretrained(demo_towers, threads=1, vision_backend=backend, device="cpu")
    for output_all, theirs in torch_verdicts.items():
        _same_verdicts(list(ours.score_stream(demo_pairs, output_all=output_all)), theirs)


def test_an_export_without_the_tower_is_refused_in_one_line(tmp_path, capsys):
    out = export_gguf(GOLDEN / "checkpoint", tmp_path / "plain", "f32", vision=("torch",)).output
    with pytest.raises(InputError, match="holds no onnx vision tower") as e:
        Scorer.from_pretrained(out, vision_backend="onnx", device="cpu")
    assert "--with-vision onnx" in str(e.value) and "\n" not in str(e.value)
    case = CASES[0]
    image = str(GOLDEN / "images" / case["image"])
    assert score_main(["--model", str(out), "--image", image, "--caption", case["caption"], "--vision-backend",
                       "onnx", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --vision-backend onnx") and err.count("\n") == 1
    assert score_main(["--model", str(out), "--image", image, "--caption", case["caption"], "--vision-backend",
                       "torch", "--device", "cpu", "--threads", "1"]) == 0
    clip = Scorer.from_pretrained(out, threads=1).score(image, case["caption"])
    assert json.loads(capsys.readouterr().out)["raw_text"] == clip.raw_text
