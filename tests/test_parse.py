"""Tests for runtime.parse: AITQE output text -> ParsedOutput, never inventing values."""

import json

from hypothesis import given, settings, strategies as st

from runtime.parse import NO_OBJECT, OVERALL_MARK, SUB_SCORES, parse_output, to_dict

FULL = {
    "Recaption": "A man stands in front of a checklist.",
    "Overall Score": "2<Overall>",
    "Overall Explanation": "The caption is vague.",
}
for _i, _name in enumerate(SUB_SCORES):
    FULL[f"{_name} Score"] = _i + 1
    FULL[f"{_name} Explanation"] = f"About {_name.lower()}."
FULL_TEXT = json.dumps(FULL, ensure_ascii=False)
STOP_TEXT = '{"Recaption": "A man stands.", "Overall Score": "2<Overall>'


def test_full_example_parses_all_fields():
    p = parse_output(FULL_TEXT, output_all=True)
    assert p.parse_error is None
    assert p.recaption == FULL["Recaption"]
    assert p.overall_score == 2
    assert p.overall_explanation == "The caption is vague."
    assert list(p.sub_scores) == list(SUB_SCORES)
    for i, name in enumerate(SUB_SCORES):
        assert p.sub_scores[name].score == i + 1
        assert p.sub_scores[name].explanation == f"About {name.lower()}."


def test_to_dict_is_json_friendly():
    d = to_dict(parse_output(FULL_TEXT, output_all=True))
    assert set(d) == {"recaption", "overall_score", "overall_explanation", "sub_scores",
                      "parse_error"}
    assert d["sub_scores"]["Object Detail"] == {"score": 3, "explanation": "About object detail."}
    assert json.loads(json.dumps(d)) == d


def test_stop_mode_truncated_text():
    p = parse_output(STOP_TEXT, output_all=False)
    assert (p.recaption, p.overall_score, p.parse_error) == ("A man stands.", 2, None)
    assert p.overall_explanation is None and p.sub_scores == {}
    assert parse_output(STOP_TEXT + "  \n", output_all=False).overall_score == 2


def test_stop_mode_text_in_full_mode_reports_the_rest():
    p = parse_output(STOP_TEXT, output_all=True)
    assert (p.recaption, p.overall_score) == ("A man stands.", 2)
    assert p.parse_error.startswith("missing: Overall Explanation, Text Quality Score")


def test_original_tools_broken_post_processing():
    # The original tool turned the ending into `"2<Overall}`: the string is never closed,
    # but the score is written out in full before the mark, so it is read, not invented.
    p = parse_output('{"Recaption": "A man stands.", "Overall Score": "2<Overall}', False)
    assert (p.recaption, p.overall_score, p.parse_error) == ("A man stands.", 2, None)


def test_cut_inside_the_mark_is_reported_not_guessed():
    p = parse_output('{"Recaption": "A man stands.", "Overall Score": "2<Ove', False)
    assert p.overall_score is None
    assert p.parse_error == "malformed: Overall Score (unterminated string: '2<Ove')"


def test_overall_score_accepts_plain_integer_and_digit_string():
    for value in ("7", 7, " 7 <Overall>"):
        text = json.dumps({"Recaption": "x", "Overall Score": value})
        assert parse_output(text, output_all=False).overall_score == 7


def test_missing_fields_reported():
    text = json.dumps({k: v for k, v in FULL.items()
                       if k not in ("Overall Explanation", "Object Detail Score")})
    p = parse_output(text, output_all=True)
    assert p.parse_error == "missing: Overall Explanation, Object Detail Score"
    assert p.overall_explanation is None
    assert p.sub_scores["Object Detail"].score is None
    assert p.sub_scores["Object Detail"].explanation == "About object detail."


def test_sub_scores_only_for_names_in_text():
    p = parse_output(json.dumps({"Recaption": "x", "Overall Score": "3<Overall>",
                                 "Semantic Understanding Score": 4}), output_all=False)
    assert p.parse_error is None
    assert list(p.sub_scores) == ["Semantic Understanding"]
    assert p.sub_scores["Semantic Understanding"].explanation is None


def test_malformed_scores_reported_and_none():
    data = dict(FULL, **{"Text Quality Score": "high", "Object Detail Score": "3",
                         "Overall Score": "two<Overall>", "Semantic Understanding Score": 2.5,
                         "Recaption": None})
    p = parse_output(json.dumps(data), output_all=True)
    assert p.recaption is None and p.overall_score is None
    assert p.sub_scores["Text Quality"].score is None
    assert p.sub_scores["Object Detail"].score == 3  # integer-valued string is accepted
    assert p.sub_scores["Semantic Understanding"].score is None
    assert p.parse_error == (
        "malformed: Recaption ('null'), Overall Score ('two<Overall>'), "
        "Text Quality Score ('high'), Semantic Understanding Score ('2.5')")


def test_unquoted_bad_token_in_truncated_text():
    text = '{"Recaption": "x", "Overall Score": "2<Overall>", "Text Quality Score": high, '
    p = parse_output(text + '"Text Quality Explanation": "ok"', output_all=True)
    assert p.sub_scores["Text Quality"].score is None
    assert p.sub_scores["Text Quality"].explanation == "ok"
    assert "Text Quality Score (not a JSON value: 'high')" in p.parse_error


def test_out_of_range_scores():
    data = dict(FULL, **{"Overall Score": "11<Overall>", "Text Quality Score": -1,
                         "Object Detail Score": 10, "Image-Text Matching Score": 0})
    p = parse_output(json.dumps(data), output_all=True)
    assert p.overall_score is None and p.sub_scores["Text Quality"].score is None
    assert p.sub_scores["Object Detail"].score == 10
    assert p.sub_scores["Image-Text Matching"].score == 0
    assert p.parse_error == ("malformed: Overall Score ('11' not in 0..10), "
                             "Text Quality Score ('-1' not in 0..10)")
    huge = '{"Recaption": "x", "Overall Score": ' + "9" * 5000
    assert parse_output(huge, output_all=False).overall_score is None


def test_escaped_quotes_and_unicode_in_recaption():
    caption = 'A sign reading "Café ☕ 東京" \\ and a {brace}, "Overall Score": "9<Overall>"'
    stop = '{"Recaption": ' + json.dumps(caption) + ', "Overall Score": "4<Overall>'
    assert parse_output(stop, output_all=False).recaption == caption
    assert parse_output(stop, output_all=False).overall_score == 4
    raw_unicode = '{"Recaption": "Café \\"☕\\"", "Overall Score": "4<Overall>"'
    p = parse_output(raw_unicode, output_all=False)  # closed string, unclosed object: scanner
    assert (p.recaption, p.overall_score, p.parse_error) == ('Café "☕"', 4, None)


def test_strings_are_stripped():
    p = parse_output('{"Recaption": "  A dog.\\n ", "Overall Score": "5<Overall>', False)
    assert p.recaption == "A dog."


def test_trailing_junk_and_preamble():
    text = "Output: " + FULL_TEXT + '</s> {"Overall Score": "9<Overall>"} junk'
    p = parse_output(text, output_all=True)
    assert p.parse_error is None and p.overall_score == 2
    assert parse_output(FULL_TEXT + "}}}", output_all=True).parse_error is None


def test_unknown_keys_ignored():
    p = parse_output(json.dumps(dict(FULL, Extra=[1, {"a": 2}])), output_all=True)
    assert p.parse_error is None


def test_full_mode_cut_midway():
    cut = FULL_TEXT[: FULL_TEXT.index('"Object Detail Explanation"') + 40]
    p = parse_output(cut, output_all=True)
    assert (p.recaption, p.overall_score) == (FULL["Recaption"], 2)
    assert p.sub_scores["Image-Text Matching"].score == 2
    assert p.sub_scores["Object Detail"].score == 3
    assert p.sub_scores["Object Detail"].explanation is None
    assert "Semantic Understanding" not in p.sub_scores
    assert p.parse_error.startswith(
        "missing: Semantic Understanding Score, Semantic Understanding Explanation, "
        "Text/Chart Description Score, Text/Chart Description Explanation; "
        "malformed: Object Detail Explanation (unterminated string: ")


def test_garbage_text():
    for text in ("", "no json here", "I cannot rate this image.", "{", "{ not json }",
                 "[1, 2]", '"Recaption": "x"', "{{{{", "{" + "[" * 5000):
        p = parse_output(text, output_all=True)
        assert p.parse_error == NO_OBJECT, text
        assert p.recaption is None and p.overall_score is None and p.sub_scores == {}


def test_empty_object_reports_all_missing():
    assert parse_output("{}", output_all=False).parse_error == "missing: Recaption, Overall Score"


FRAGMENTS = st.sampled_from([
    "{", "}", '"', ":", ",", " ", "\n", "\\", '\\"', "[", "]", "null", "true", "-", ".", "e",
    "0", "2", "7", "10", "11", "99", OVERALL_MARK, "<Overall", "Recaption", '"Recaption": ',
    '"Overall Score": ', '"Overall Explanation": ', "é", "☕",
    *(f'"{name} {part}": ' for name in SUB_SCORES for part in ("Score", "Explanation")),
])
TEXTS = st.one_of(st.text(max_size=200), st.lists(FRAGMENTS, max_size=40).map("".join),
                  st.lists(FRAGMENTS, max_size=40).map(lambda parts: "{" + "".join(parts)))


@settings(max_examples=400, deadline=None, database=None)
@given(text=TEXTS, output_all=st.booleans())
def test_fuzz_never_raises_and_never_invents_scores(text, output_all):
    p = parse_output(text, output_all)
    json.dumps(to_dict(p))
    assert p.parse_error is None or "\n" not in p.parse_error
    scores = [p.overall_score] + [s.score for s in p.sub_scores.values()]
    for score in scores:
        assert score is None or (0 <= score <= 10 and str(score) in text)
    texts = [p.recaption, p.overall_explanation] + [s.explanation for s in p.sub_scores.values()]
    for value in texts:
        assert value is None or value == value.strip()
    assert list(p.sub_scores) == [name for name in SUB_SCORES if name in p.sub_scores]


@settings(max_examples=200, deadline=None, database=None)
@given(caption=st.text(max_size=50), score=st.integers(0, 10), output_all=st.booleans())
def test_fuzz_round_trip_stop_mode(caption, score, output_all):
    text = '{"Recaption": ' + json.dumps(caption) + f', "Overall Score": "{score}{OVERALL_MARK}'
    p = parse_output(text, output_all)
    assert (p.recaption, p.overall_score) == (caption.strip(), score)
    if not output_all:
        assert p.parse_error is None
