"""Parse AITQE's generated text into scores and explanations.

AITQE writes one JSON-like object whose keys come in a fixed order: "Recaption",
"Overall Score" (a string such as "2<Overall>"), "Overall Explanation", then a
"<name> Score" (integer) and "<name> Explanation" for each name in SUB_SCORES.

The parser is hand-written on purpose. In stop mode (the default) generation halts
right after ``<Overall>``, so the text is truncated JSON by design
(``{"Recaption": "...", "Overall Score": "2<Overall>``) and ``json.loads`` always
fails on it; in full mode the object may be followed by junk or cut off by the token
limit. JSON "repair" libraries would invent content (close strings, guess values,
turn bad tokens into nulls) and hide what the model really wrote. Here a field that
is missing or malformed stays None and is named in ``parse_error``: no value is made up.

Strategy: decode the first object with ``JSONDecoder.raw_decode`` (ignores trailing
junk); else, in stop mode, close a text ending in ``<Overall>`` with ``"}``; else scan
``"Key": value`` pairs one by one and keep what is complete. It never raises.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from json.decoder import scanstring

SUB_SCORES: tuple[str, ...] = ("Text Quality", "Image-Text Matching", "Object Detail",
                               "Semantic Understanding", "Text/Chart Description")
OVERALL_MARK = "<Overall>"
NO_OBJECT = "no JSON object in model output"
_STOP_KEYS = ("Recaption", "Overall Score")  # expected fields per mode, in output order
_FULL_KEYS = (*_STOP_KEYS, "Overall Explanation",
              *(f"{name} {part}" for name in SUB_SCORES for part in ("Score", "Explanation")))

_DECODER = json.JSONDecoder(strict=False)
_WS_COMMA = re.compile(r"[\s,]*")
_COLON = re.compile(r"\s*:\s*")
_INT_TOKEN = re.compile(r"-?[0-9]+(?![0-9.eE])")
_RAW_TOKEN = re.compile(r"[^,}\n]*")
_INT_STR = re.compile(r"\s*(-?[0-9]+)\s*")
_OVERALL_STR = re.compile(r"\s*(-?[0-9]+)\s*(?:<Overall>)?\s*")
_OVERALL_CUT = re.compile(r"\s*(-?[0-9]+)\s*<Overall")  # prefix of an unterminated string


@dataclass
class SubScore:
    score: int | None
    explanation: str | None


@dataclass
class ParsedOutput:
    recaption: str | None = None
    overall_score: int | None = None
    overall_explanation: str | None = None
    sub_scores: dict[str, SubScore] = field(default_factory=dict)
    parse_error: str | None = None


@dataclass
class _Bad:
    """A value the scanner could not read completely (e.g. an unterminated string)."""
    raw: str
    reason: str


def _short(value: object, limit: int = 40) -> str:
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _scan(text: str, start: int) -> dict[str, object]:
    """Read "Key": value pairs after text[start] == "{" until the structure breaks."""
    pairs: dict[str, object] = {}
    pos = start + 1
    while True:
        pos = _WS_COMMA.match(text, pos).end()
        if pos >= len(text) or text[pos] != '"':
            return pairs
        try:
            key, pos = scanstring(text, pos + 1, False)
        except ValueError:
            return pairs
        colon = _COLON.match(text, pos)
        if colon is None:
            return pairs
        pos = colon.end()
        if text.startswith('"', pos):
            try:
                pairs[key], pos = scanstring(text, pos + 1, False)
            except ValueError as exc:
                reason = "unterminated string" if "Unterminated" in str(exc) else "bad string"
                pairs[key] = _Bad(text[pos + 1 :], reason)
                return pairs
            continue
        number = _INT_TOKEN.match(text, pos)
        if number is not None:
            token = number.group()
            pairs[key] = int(token) if len(token) < 100 else _Bad(token, "too large")
            pos = number.end()
            continue
        try:
            pairs[key], pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            token = _RAW_TOKEN.match(text, pos)
            pairs[key] = _Bad(token.group().strip(), "not a JSON value")
            pos = token.end()


def _decode(text: str, start: int, output_all: bool) -> dict[str, object] | None:
    """The object's key/value pairs, or None when no pair could be read at all."""
    candidates = [text[start:]]  # raw_decode stops at the object's end: junk after it is fine
    body = candidates[0].rstrip()
    if not output_all and body.endswith(OVERALL_MARK):
        candidates.append(body + '"}')  # stop mode: close the string and object we cut
    for candidate in candidates:
        try:
            return _DECODER.raw_decode(candidate)[0]
        except (ValueError, RecursionError):
            pass
    return _scan(text, start) or None


def _describe(value: object) -> str:
    if isinstance(value, _Bad):
        return f"{value.reason}: {_short(value.raw)}"
    if isinstance(value, str):
        return _short(value)
    try:
        return _short(json.dumps(value))
    except (ValueError, RecursionError):
        return type(value).__name__


def _as_text(value: object) -> tuple[str | None, str | None]:
    """(text, problem): exactly one is None."""
    return (value.strip(), None) if isinstance(value, str) else (None, _describe(value))


def _as_score(value: object, overall: bool) -> tuple[int | None, str | None]:
    """(score, problem): exactly one is None. Scores are integers in 0..10."""
    if isinstance(value, int) and not isinstance(value, bool):
        digits = str(value)
    elif isinstance(value, str):
        match = (_OVERALL_STR if overall else _INT_STR).fullmatch(value)
        if match is None:
            return None, _describe(value)
        digits = match.group(1)
    elif overall and isinstance(value, _Bad) and _OVERALL_CUT.match(value.raw):
        # The score is written out in full before the mark; only the string is cut.
        digits = _OVERALL_CUT.match(value.raw).group(1)
    else:
        return None, _describe(value)
    number = int(digits) if len(digits) < 100 else None  # int() refuses huge digit strings
    if number is None or not 0 <= number <= 10:
        return None, f"{_short(digits)} not in 0..10"
    return number, None


def parse_output(text: str, output_all: bool) -> ParsedOutput:
    """Parse AITQE's text; output_all is True for full mode, False for stop mode."""
    start = text.find("{")
    pairs = _decode(text, start, output_all) if start >= 0 else None
    if pairs is None:
        return ParsedOutput(parse_error=NO_OBJECT)
    result = ParsedOutput()
    expected = _FULL_KEYS if output_all else _STOP_KEYS
    problems: dict[str, str] = {}

    def get(key: str, convert):
        value, problem = convert(pairs[key]) if key in pairs else (None, None)
        if problem is not None:
            problems[key] = problem
        return value

    result.recaption = get("Recaption", _as_text)
    result.overall_score = get("Overall Score", lambda v: _as_score(v, overall=True))
    result.overall_explanation = get("Overall Explanation", _as_text)
    for name in SUB_SCORES:
        score_key, explanation_key = f"{name} Score", f"{name} Explanation"
        if score_key in pairs or explanation_key in pairs:
            result.sub_scores[name] = SubScore(
                score=get(score_key, lambda v: _as_score(v, overall=False)),
                explanation=get(explanation_key, _as_text),
            )

    missing = [key for key in expected if key not in pairs]
    malformed = [f"{key} ({problems[key]})" for key in expected if key in problems]
    parts = [f"{label}: {', '.join(keys)}" for label, keys in
             (("missing", missing), ("malformed", malformed)) if keys]
    result.parse_error = "; ".join(parts) or None
    return result


def to_dict(p: ParsedOutput) -> dict:
    """A JSON-friendly dict: recaption, overall_score, overall_explanation,
    sub_scores {name: {score, explanation}}, parse_error."""
    return dataclasses.asdict(p)
