"""The review page as one self-contained HTML string: summary, run settings, score histograms drawn
as inline SVG (overall and per shard), and the rows as a JSON block the page's script turns into
a sortable, filterable table (`runtime.review.assets`). Every text from the data is escaped: in
HTML by `html.escape`, in the JSON block with `<`, `>` and `&` as JSON escapes.
"""

from __future__ import annotations

import difflib
import html
import json
import math

from runtime.review.assets import CSS, JS
from runtime.review.survey import Histogram, Survey
from runtime.review.verdicts import Row

NO_SCORE = "#8c959f"
MAX_SHARDS = 500  # shards drawn one by one


def word_diff(caption: str | None, recaption: str | None) -> list[list[str]]:
    """The recaption against the caption, word by word: [["=" | "-" | "+", words], ...]; [] if either is missing."""
    if caption is None or recaption is None:
        return []
    old, new = caption.split(), recaption.split()
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(["=", " ".join(old[i1:i2])])
            continue
        if i2 > i1:
            out.append(["-", " ".join(old[i1:i2])])
        if j2 > j1:
            out.append(["+", " ".join(new[j1:j2])])
    return out


def _color(score: int) -> str:
    return f"hsl({max(0, min(10, score)) * 12}, 62%, 46%)"


def histogram_svg(hist: Histogram, width: int = 640, height: int = 200, small: bool = False) -> str:
    """Bars of rows per overall score (0-10 and any other score seen), and one grey bar of rows without a score."""
    e = html.escape
    scores = range(min([0, *hist.counts]), max([10, *hist.counts]) + 1)
    bars = [(str(s), hist.counts.get(s, 0), _color(s)) for s in scores]
    if hist.unscored:
        bars.append(("none", hist.unscored, NO_SCORE))
    top = max([n for _, n, _ in bars] + [1])
    pad_x, pad_top, pad_bottom = (0, 2, 0) if small else (8, 18, 20)
    slot = (width - 2 * pad_x) / len(bars)
    room = height - pad_top - pad_bottom
    parts = []
    for i, (label, n, color) in enumerate(bars):
        x, h = pad_x + i * slot, room * n / top
        y = pad_top + room - h
        what = f"score {label}" if label != "none" else "no score"
        parts.append(f'<rect x="{x + slot * 0.1:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{max(h, 0.5 if n else 0):.1f}" '
                     f'fill="{color}"><title>{e(what)}: {n:,} pairs</title></rect>')
        if not small:
            cx = x + slot / 2
            parts.append(f'<text x="{cx:.1f}" y="{y - 4:.1f}" text-anchor="middle">{n:,}</text>' if n else "")
            parts.append(f'<text x="{cx:.1f}" y="{height - 5}" text-anchor="middle">{e(label)}</text>')
    if not small:
        parts.append(f'<line x1="{pad_x}" x2="{width - pad_x}" y1="{pad_top + room}" y2="{pad_top + room}" stroke="#d0d7de"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="score histogram">{"".join(parts)}</svg>')


def _mean(hist: Histogram) -> str:
    return "\u2013" if hist.mean is None else f"{hist.mean:.2f}"


def _cards(hist: Histogram, shards: int) -> str:
    items = [(f"{hist.rows:,}", "pairs"), (f"{shards:,}", "shards" if shards != 1 else "file"),
             (_mean(hist), "mean overall"), (f"{hist.unscored:,}", "without a score"),
             (f"{hist.replaced:,}", "captions replaced"), (f"{hist.dropped:,}", "dropped from the copy")]
    return "".join(f'<div class="card"><b>{v}</b><span>{k}</span></div>' for v, k in items)


def _settings(settings: dict, rows: list[Row]) -> str:
    if not settings:  # a run that did not record its settings: what its rows say
        settings = {"model": sorted({r.model for r in rows if r.model}),
                    "model fingerprint": sorted({r.fingerprint for r in rows if r.fingerprint})}
        settings = {k: ", ".join(v) for k, v in settings.items() if v}
    if not settings:
        return '<p class="muted">not recorded by this run</p>'
    shown = {k: "\u2013" if v is None else v if isinstance(v, str) else json.dumps(v) for k, v in settings.items()}
    return '<dl class="settings">' + "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(v)}</dd>"
                                             for k, v in shown.items()) + "</dl>"


def _shard_table(survey: Survey) -> str:
    """A row per shard, with its histogram; past MAX_SHARDS, only the shards of the lowest mean score."""
    shards = list(survey.shards.items())
    more = ""
    if len(shards) > MAX_SHARDS:
        shards = sorted(shards, key=lambda s: math.inf if s[1].mean is None else s[1].mean)[:MAX_SHARDS]
        more = (f'<p class="muted">the {MAX_SHARDS:,} shards of lowest mean score; {len(survey.shards) - MAX_SHARDS:,} '
                "more are counted in the totals above</p>")
    head = "<tr><th>shard</th><th>pairs</th><th>mean</th><th>no score</th><th>replaced</th><th>scores 0-10</th></tr>"
    body = "".join(
        f'<tr><td class="key">{html.escape(name)}</td><td class="num">{h.rows:,}</td><td class="num">{_mean(h)}</td>'
        f'<td class="num">{h.unscored:,}</td><td class="num">{h.replaced:,}</td>'
        f'<td>{histogram_svg(h, width=180, height=34, small=True)}</td></tr>' for name, h in shards)
    return f'{more}<table class="shards"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _json_block(data: object) -> str:
    """JSON that cannot end its <script> element or open another: <, > and & as \\u escapes."""
    text = json.dumps(data, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _row_data(row: Row, why: str) -> dict:
    return {"key": row.key, "shard": row.unit, "overall": row.overall, "expected": row.expected,
            "caption": row.caption, "recaption": row.recaption, "diff": word_diff(row.caption, row.recaption),
            "subs": row.subs, "error": row.error, "replaced": row.replaced, "dropped": row.dropped,
            "note": row.note, "thumb": row.thumb, "why": why}


def showing(survey: Survey, shown: int) -> str:
    """`showing K of N pairs: ...`, said on the page and by the command."""
    whys = list(survey.picks.values())
    counts = {why: whys.count(why) for why in ("lowest", "replaced", "no score", "sampled")}
    parts = ", ".join(f"{n:,} {label}" for label, n in zip(
        ("lowest-scored", "replaced", "without a score", "sampled at random"), counts.values()) if n)
    return f"showing {shown:,} of {survey.total.rows:,} pairs" + (f" ({parts})" if parts else "")


def render(survey: Survey, rows: list[tuple[Row, str]], settings: dict, title: str, images: str | None) -> str:
    """The whole page: `rows` are the shown rows with why each is shown; `images` the --input they came from."""
    source = f"images from {images}" if images else "no --input given: no images"
    notes = sorted({r.note for r, _ in rows if r.note})  # the model's note (the demo model's), once for the page
    per_shard = (f"<h2>Scores per shard</h2>{_shard_table(survey)}" if len(survey.shards) > 1 else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>AITQE review: {html.escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>AITQE review</h1>
<div class="sub">verdicts from {html.escape(title)} \u00b7 {html.escape(source)}</div>
{"".join(f'<div class="note">{html.escape(n)}</div>' for n in notes)}
<div class="cards">{_cards(survey.total, len(survey.shards))}</div>
<h2>Run settings</h2>{_settings(settings, [r for r, _ in rows])}
<h2>Scores, all {survey.total.rows:,} pairs</h2>{histogram_svg(survey.total)}
{per_shard}
<h2>Pairs</h2>
<p id="showing">{html.escape(showing(survey, len(rows)))}</p>
<div class="controls">
<input id="q" type="search" placeholder="filter: caption, recaption or key" aria-label="text filter">
<label>overall from <input id="min" type="number" min="0" max="10" aria-label="minimum overall"></label>
<label>to <input id="max" type="number" min="0" max="10" aria-label="maximum overall"></label>
<label><input type="radio" name="only" value="all" checked> all</label>
<label><input type="radio" name="only" value="replaced"> replaced only</label>
<label><input type="radio" name="only" value="errors"> errors only</label>
<span id="count"></span>
</div>
<table id="pairs"><thead><tr><th>image</th><th data-sort="key">key</th><th data-sort="shard">shard</th>
<th data-sort="overall">overall</th><th data-sort="expected">expected</th><th>sub-scores</th>
<th>caption and recaption (<del>removed</del> <ins>added</ins>)</th></tr></thead><tbody></tbody></table>
<script type="application/json" id="rows">{_json_block([_row_data(r, why) for r, why in rows])}</script>
<script>{JS}</script>
</body></html>
"""
