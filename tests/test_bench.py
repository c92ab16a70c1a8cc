"""python -m bench: real runs on the demo model and on tiny synthetic bundles (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bench.__main__ import main
from bench.eval.metrics import verdict_agreement
from bench.eval.teacher_forced import answer_tokens
from quantize.__main__ import main as quantize
from runtime.demo import DEMO_MODEL
from runtime.engine import Branch
from runtime.score import main as score
from runtime.scorer import Scorer, Verdict
from runtime.scores import Scores
from tests.conftest import altered_copy

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--batch-sizes", "1,2", "--repeats", "2", "--batch-size", "8"]


def verdict(overall, recaption="a b c", tq=None, error=None) -> Verdict:
    subs = {} if tq is None else {"Text Quality": {"score": tq}}
    return Verdict(id=None, model="m", overall_score=overall, recaption=recaption, sub_scores=subs, error=error,
                   parse_error=None if overall is not None else "no overall score")


def test_verdict_agreement_figures():
    ref = [verdict(9, tq=9), verdict(5, tq=8), verdict(3, tq=7), verdict(1, "x y", tq=8)]
    cand = [verdict(9, tq=9), verdict(6, tq=8), verdict(None), verdict(1, "x z", tq=2)]
    a = verdict_agreement(ref, cand, threshold=6)
    assert a["overall_agreement"] == 0.5 and a["overall_within_1"] == 0.75
    assert a["overall_mad"] == pytest.approx(1 / 3) and a["both_scored"] == 3
    assert a["spearman"] == pytest.approx(1.0) and a["kendall"] == pytest.approx(1.0)
    assert a["sub_score_agreement"]["Text Quality"] == 0.5
    assert a["json_valid"] == 0.75
    # keep/replace at 6: ref keep, replace, replace, replace; cand keep, keep, none, replace
    assert a["enhance_agreement"] == 0.5
    assert a["recaption_f1"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)  # "x y" vs "x z": F1 0.5


def test_score_position_and_tokens():
    s = Scorer.from_pretrained(DEMO_MODEL, device="cpu")
    text = '{"Recaption": "big red circle top", "Overall Score": "7<Overall>", "Overall Explanation": "ok."}'
    ids = answer_tokens(s.tokenizer, text, s.eos.ids)
    scores, asked = Scores.of(s.tokenizer), []
    watch = scores()
    for t in ids:  # the score module's observer asks for the digits' probabilities where the score starts
        asked.append(watch.wants())
        watch.add(t, [0.1] * 10 if asked[-1] else None)
    at = max(k for k, a in enumerate(asked) if a)  # (it may also ask before an optional opening quote)
    assert s.tokenizer.decode([ids[at]]).strip() == "7" and ids[-1] == s.eos.ids[0]
    assert watch.end() == [Branch(at, scores.ids[1])]  # the "1" branch the answer did not take
    assert [s.tokenizer.decode([i]) for i in scores.ids] == [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_bundles")
    for m, extra in (("bf16", []), ("bnb-int8", []), ("gptq-int4", ["--calibration-samples", "8"])):
        assert quantize(["--model", str(DEMO_MODEL), "--method", m, "--output", str(d / m), *extra]) == 0
    return d


@pytest.mark.slow
def test_bench_demo_report(bundles, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["--reference", str(DEMO_MODEL), "--candidates", str(bundles / "bf16"), str(bundles / "bnb-int8"),
                 "--pairs", "demo:8", "--output", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    r = json.loads((out / "results.json").read_text())
    ref, bf16, int8 = r["variants"]
    assert ref["accuracy"]["overall_agreement"] == 1.0
    # same weights, both computed in fp32 on CPU: the bf16 bundle is the reference
    assert bf16["accuracy"]["overall_agreement"] == 1.0 and bf16["teacher_forced"]["kl_mean"] < 1e-6
    assert bf16["teacher_forced"]["top1_agreement"] == 1.0 and min(bf16["layer_snr_db"]) > 100
    assert 0 < int8["teacher_forced"]["kl_mean"] < 0.5 and int8["accuracy"]["overall_agreement"] >= 0.6
    assert 10 < min(int8["layer_snr_db"]) < 100
    assert int8["bits_per_weight"] < 10 and int8["disk_bytes"] < bf16["disk_bytes"]
    for v in r["variants"]:
        c = v["cost"]
        assert len(c["prefill_ms"]) == 2 and all(x > 0 for x in c["decode_ms_per_step"])
        assert c["batches"]["1"]["peak_bytes"] > 0 and c["best_batch"] in (1, 2)
    assert r["environment"]["versions"]["torch"] and r["ceilings"]["copy_gb_per_s"] > 0
    md = (out / "report.md").read_text()
    assert "## Accuracy against the reference" in md and "**Estimate**" in md and "(min-max)" in md
    summary = [line for line in md.splitlines() if line.startswith("| bnb-int8 |")][0]
    assert " - |" not in summary  # every column of the summary is filled
    for png in r["plots"]:
        assert Image.open(out / png).size[0] > 100
    assert "| bnb-int8 | bnb-int8 |" in printed


def test_bench_times_what_runtime_score_runs(bundles, tmp_path, capsys):
    """The cost child's texts at batch B are runtime.score's at --batch-size B on the same pairs file."""
    out = tmp_path / "report"
    assert main(["--reference", str(DEMO_MODEL), "--candidates", str(bundles / "bnb-int8"), "--pairs", "demo:4",
                 "--output", str(out), "--no-plots", "--batch-sizes", "1,4", "--repeats", "1"]) == 0
    r = json.loads((out / "results.json").read_text())
    pairs = Path(r["pairs"]["file"])
    for v in r["variants"]:
        for batch in ("1", "4"):
            verdicts = tmp_path / f"{v['name']}-{batch}.jsonl"
            assert score(["--model", v["path"], "--input", str(pairs), "--output", str(verdicts), "--device", "cpu",
                          "--batch-size", batch, "--quiet"]) == 0
            texts = [json.loads(line)["raw_text"] for line in verdicts.read_text().splitlines()]
            assert v["cost"]["batches"][batch]["texts"] == texts[:int(batch)]
            assert "<Overall>" in texts[0]  # the default mode, as users run it


def test_bench_refuses_a_candidate_calibrated_on_its_pairs(bundles, tmp_path, capsys):
    from calibration.build import build, save
    from calibration.split import demo_pairs
    from runtime.model.checkpoint import fingerprint

    scorer = Scorer.from_pretrained(DEMO_MODEL, device="cpu")
    leaky = build(scorer, demo_pairs(8, 1000, "evaluation"), source="evaluation pairs on purpose",
                  model_fingerprint=fingerprint(DEMO_MODEL))
    save(leaky, tmp_path / "leaky.safetensors")
    assert quantize(["--model", str(DEMO_MODEL), "--method", "gptq-int4", "--calibration",
                     str(tmp_path / "leaky.safetensors"), "--output", str(tmp_path / "leaky")]) == 0
    assert main(["--reference", str(DEMO_MODEL), "--candidates", str(bundles / "gptq-int4"), str(tmp_path / "leaky"),
                 "--pairs", "demo:8", "--output", str(tmp_path / "o"), "--no-cost", "--no-plots"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --candidates") and "calibrated on 8 of the evaluation pairs" in err


def test_bench_records_a_broken_candidate_and_goes_on(bundles, tmp_path):
    broken = altered_copy(bundles / "bnb-int8", tmp_path / "broken", "backbone/config.json")
    out = tmp_path / "report"
    assert main(["--reference", str(DEMO_MODEL), "--candidates", str(broken), str(bundles / "bf16"),
                 "--pairs", "demo:2", "--output", str(out), "--no-plots", *FAST]) == 0
    r = json.loads((out / "results.json").read_text())
    bad, good = r["variants"][1:]
    assert "altered" in bad["accuracy_error"] and "altered" in bad["cost_error"]
    assert good["accuracy"]["overall_agreement"] == 1.0 and good["cost"]["batches"]
    assert "## Errors" in (out / "report.md").read_text()


def test_bench_refuses_bad_input(bundles, tmp_path, capsys):
    assert main(["--reference", str(bundles / "bnb-int8"), "--candidates", str(bundles / "bf16"),
                 "--output", str(tmp_path / "o")]) == 1
    assert main(["--reference", str(DEMO_MODEL), "--candidates", str(bundles / "bf16"), "--pairs",
                 str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")]) == 1
    assert main(["--reference", str(DEMO_MODEL), "--candidates", str(tmp_path), "--output", str(tmp_path / "o")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 3 and "must be 16-bit" in err[0] and "no such file" in err[1] and "not an AITQE" in err[2]


@pytest.mark.slow
def test_bench_synthetic_tiny(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["--synthetic", "tiny", "--output", str(out), "--methods", "bf16,bnb-int8,bnb-nf4,gptq-int4,gptq-int8",
                 *FAST]) == 0
    r = json.loads((out / "results.json").read_text())
    assert [v["method"] for v in r["variants"]] == ["bf16", "bnb-int8", "bnb-nf4", "gptq-int4", "gptq-int8"]
    for v in r["variants"]:
        c = v["cost"]
        assert c["batches"]["2"]["ms_per_pair"] and "accuracy" not in v, v
        assert c["batches"]["1"]["new_tokens_mean"] == 6  # no end-of-generation id: the whole budget
    bpw = {v["method"]: v["bits_per_weight"] for v in r["variants"]}
    assert bpw["bnb-nf4"] < bpw["bnb-int8"] < bpw["bf16"] and bpw["gptq-int4"] < bpw["gptq-int8"] < bpw["bf16"]
    md = (out / "report.md").read_text()
    assert "random weights" in md and "## Accuracy" not in md and (out / "latency_memory.png").is_file()
    assert not (out / "synthetic-work").exists()


@pytest.mark.slow
def test_device_check_script_on_cpu(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), SHAPE="tiny", DEVICE="cpu", PAIRS="demo:4", BATCHES="1,2", WHEELS="",
               CAL="8", BENCH_S="600", DEMO_S="600", PYTHON=sys.executable)
    proc = subprocess.run(["bash", "bench/device_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = (tmp_path / "steps.txt").read_text().splitlines()
    assert len(steps) == 3 and all(": exit 0 after" in s for s in steps), steps
    assert "## GPU check summary" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    methods = summary["methods"]
    for m in ("bf16", "bf16 (reference engine)", "gptq-int4", "bnb-nf4"):
        assert methods[m]["decode_ms_per_step"] > 0 and methods[m]["peak_gib_b1"] > 0, m
    assert methods["gptq-int4"]["kernels"] == ["TorchLinear"]  # CPU keeps GPTQModel's torch kernel
    assert "compute capability >= 8.9" in methods["fp8"]["error"]  # refused on CPU, in one line
    checks = {c["check"]: c for c in summary["checks"]}
    assert checks["fp8 prefill b1 < 1.0x bf16"]["result"] == "not measured"
    assert checks["gptq-int4 pipeline peak GiB b1 <= 7"]["result"] == "pass"
    assert set(summary["tower"]["attention"]) == {"sdpa", "eager"}
    assert set(summary["tower"]["attention"]["sdpa"]) == {"1", "32"}
    demo = json.loads((tmp_path / "bench-demo" / "results.json").read_text())
    by_method = {v["method"]: v for v in demo["variants"]}
    assert set(by_method) == {"checkpoint", "gptq-int4", "fp8", "bnb-nf4"}
    assert by_method["gptq-int4"]["accuracy"]["overall_agreement"] >= 0.5
    assert "compute capability" in by_method["fp8"]["accuracy_error"]
