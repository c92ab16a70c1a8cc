"""Tests for the synthetic demo world: determinism, verdict format, score rules, rendering."""
import hashlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from runtime.demo import world
from runtime.demo.world import (ASPECTS, KINDS, RULES, Example, caption_for, corpus_texts, examples,
                                make_example, verdict_for, verdict_text)

ROOT = Path(__file__).resolve().parents[1]
WRONG = tuple(k for k in KINDS if k.startswith("wrong_"))
KEYS = ["Recaption", "Overall Score", "Overall Explanation"] + [
    f"{a} {s}" for a in ASPECTS for s in ("Score", "Explanation")]


def overall(verdict: dict) -> int:
    return int(verdict["Overall Score"].removesuffix("<Overall>"))


def scenes(n: int, seed: int = 11):
    return [make_example(seed, i).scene for i in range(n)]


def digest(seed: int, n: int) -> str:
    h = hashlib.sha256()
    for e in examples(seed, n):
        h.update(e.image.tobytes() + e.caption.encode() + verdict_text(e.verdict).encode())
    return h.hexdigest()


def test_deterministic_in_seed_and_index():
    for kind in (None, "garbled", "wrong_count"):
        a, b = make_example(5, 17, kind=kind), make_example(5, 17, kind=kind)
        assert a.image.tobytes() == b.image.tobytes()
        assert (a.caption, a.kind, a.verdict, a.scene) == (b.caption, b.kind, b.verdict, b.scene)
    assert digest(1, 20) == digest(1, 20) != digest(2, 20)
    assert len({make_example(s, 0).image.tobytes() for s in range(10)}) == 10


def test_deterministic_across_processes():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import tests.test_world as t; "
            "print(t.digest(3, 8))")
    outs = {subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True,
                           check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": str(s)}
                           ).stdout.strip() for s in (1, 2)}
    assert outs == {digest(3, 8)}


def test_scene_does_not_depend_on_requested_kind():
    base = make_example(9, 4).scene
    for kind in KINDS:
        e = make_example(9, 4, kind=kind)
        assert e.scene == base and e.kind == kind


def test_verdict_keys_order_and_types():
    for e in examples(4, 200):
        v = e.verdict
        assert isinstance(e, Example) and list(v) == KEYS
        assert v["Recaption"] == e.description == world.description(e.scene)
        assert re.fullmatch(r"\d+<Overall>", v["Overall Score"])
        for key in KEYS:
            if key.endswith(" Score") and key != "Overall Score":
                assert type(v[key]) is int and 1 <= v[key] <= 10
            else:
                assert isinstance(v[key], str) and v[key]
        assert 1 <= overall(v) <= 10


def test_verdict_text_is_aitqe_json():
    for e in examples(6, 50):
        text = verdict_text(e.verdict)
        assert json.loads(text) == e.verdict and list(json.loads(text)) == KEYS
        assert text == json.dumps(e.verdict, ensure_ascii=False)
        assert re.search(r'"Overall Score": "\d<Overall>", "Overall Explanation": ', text)
        assert text.startswith('{"Recaption": ')


def test_all_kinds_sampled_and_requestable():
    sampled = {make_example(2, i).kind for i in range(600)}
    assert sampled == set(KINDS)
    for kind in KINDS:
        assert make_example(2, 0, kind=kind).kind == kind
    with pytest.raises(ValueError, match="unknown caption kind"):
        make_example(2, 0, kind="nonsense")


def expected_tcd(scene, kind) -> int:
    if kind == "wrong_text":
        return 2
    if scene.text is None:
        return 8
    return {"vague": 1, "unrelated": 1, "garbled": 5}.get(kind, 9)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 10**6))
def test_scores_follow_rules(seed, index):
    scene = make_example(seed, index).scene
    verdicts = {k: verdict_for(scene, k) for k in KINDS}
    for kind, v in verdicts.items():
        o, tq, itm, od, su = RULES[kind]
        assert overall(v) == o
        assert [v[f"{a} Score"] for a in ASPECTS] == [tq, itm, od, su, expected_tcd(scene, kind)]
        assert v["Recaption"] == world.description(scene)
    exact = verdicts["exact"]
    for kind in KINDS:
        if kind != "exact":
            assert overall(verdicts[kind]) < overall(exact)
            assert verdicts[kind]["Image-Text Matching Score"] <= exact["Image-Text Matching Score"]
    for kind in WRONG + ("vague", "unrelated"):
        assert overall(verdicts[kind]) < overall(verdicts["verbose"])


def test_overall_values_modest_and_all_levels_present():
    counts = {}
    for e in examples(8, 1000):
        counts[overall(e.verdict)] = counts.get(overall(e.verdict), 0) + 1
    assert set(counts) == {1, 3, 4, 5, 6, 8, 9}
    assert min(counts.values()) >= 50


def test_wrong_captions_differ_and_name_the_change():
    for scene in scenes(300):
        desc = world.description(scene)
        exact_variants = {caption_for(scene, "exact", random.Random(i)) for i in range(40)}
        assert desc in exact_variants
        for kind in WRONG:
            objs, text, detail = world.mutation(scene, kind)
            assert (objs, text) != (scene.objects, scene.text)
            assert len({(o.row, o.col) for o in objs}) == len(objs)
            cap = caption_for(scene, kind, random.Random(1))
            assert cap != desc and cap not in exact_variants
            assert all(o.phrase() in cap for o in objs) and (text is None or text in cap)
            v = verdict_for(scene, kind)
            assert v["Image-Text Matching Explanation"] == detail
        objs, _, detail = world.mutation(scene, "wrong_colour")
        old = [o for o in scene.objects if o not in objs]
        new = [o for o in objs if o not in scene.objects]
        assert len(old) == len(new) == 1 and old[0].colour in detail and new[0].colour in detail
        assert abs(len(world.mutation(scene, "wrong_count")[0]) - len(scene.objects)) == 1
        _, text, _ = world.mutation(scene, "wrong_text")
        assert text is not None and text != scene.text


def test_other_kinds_differ_from_description():
    for scene in scenes(200, seed=12):
        desc = world.description(scene)
        for i in range(3):
            rng = random.Random(i)
            assert caption_for(scene, "garbled", rng) != desc
            assert caption_for(scene, "verbose", rng) != desc
            assert desc not in caption_for(scene, "vague", rng)
            assert caption_for(scene, "unrelated", rng) in world.UNRELATED


@pytest.mark.parametrize("size", [32, 64, 96])
def test_image_size_and_objects_visible(size):
    for e in examples(7, 60, size=size):
        img = e.image
        assert img.mode == "RGB" and img.size == (size, size)
        for o in e.scene.objects:
            assert img.getpixel(world.object_centre(o, size)) == world.COLOURS[o.colour]
        if e.scene.text:  # the text row has ink: pure black or white pixels
            cell = size / 3
            row = np.asarray(img)[int(e.scene.text_row * cell):int((e.scene.text_row + 1) * cell)]
            ink = ((row == 0).all(-1) | (row == 255).all(-1)).sum()
            assert ink >= size // 2


def test_background_never_close_to_object_colours():
    for bg in world.BACKGROUNDS.values():
        for c in world.COLOURS.values():  # gradient 12 + noise 6 leave a margin of 18 per channel
            assert max(abs(a - b) for a, b in zip(bg, c)) >= 18 + 25


def test_corpus_texts_match_examples():
    texts = list(corpus_texts(3, 30))
    assert len(texts) == 60
    for i, e in enumerate(examples(3, 30)):
        assert texts[2 * i] == e.caption and texts[2 * i + 1] == verdict_text(e.verdict)


def test_texts_are_short():
    caps, verdicts = [], []
    for t in zip(*[iter(corpus_texts(5, 500))] * 2):
        caps.append(len(t[0]))
        verdicts.append(len(t[1]))
    assert sum(caps) / len(caps) <= 80 and max(caps) <= 200
    assert sum(verdicts) / len(verdicts) <= 620 and max(verdicts) <= 720
