"""The review page's stylesheet and script, inlined into every report (no file or network is fetched).

The script reads the rows from the page's JSON block and builds the table with DOM calls and
`textContent` only, so captions are always text, never markup. Click a header to sort (again to
reverse; missing values last); the text box, the min/max score boxes and the replaced/errors toggle
filter the rows.
"""

CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1280px; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 2px; }
h2 { font-size: 16px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.sub, .muted { color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 16px 0 4px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 110px; background: #fff; }
.card b { display: block; font-size: 20px; }
.card span { color: var(--muted); font-size: 12px; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 6px 10px; margin: 10px 0; }
dl.settings { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.settings dt { color: var(--muted); }
dl.settings dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px;
                 overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; position: sticky; top: 0; z-index: 1; white-space: nowrap; }
th[data-sort] { cursor: pointer; user-select: none; }
th[data-sort]:hover { color: var(--accent); }
th[aria-sort=ascending]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort=descending]::after { content: " \\25BC"; font-size: 10px; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.shards td { padding: 3px 8px; }
.controls { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px; margin: 8px 0 12px;
            padding: 10px 12px; background: var(--bg); border: 1px solid var(--line); border-radius: 8px; }
.controls input[type=search] { width: 300px; }
.controls input[type=number] { width: 64px; }
.controls input { font: inherit; padding: 3px 6px; border: 1px solid var(--line); border-radius: 5px; }
#count { margin-left: auto; color: var(--muted); }
.thumb img { display: block; border-radius: 4px; border: 1px solid var(--line); }
.noimg { display: inline-block; width: 64px; padding: 18px 0; text-align: center; font-size: 11px;
         color: var(--muted); background: var(--bg); border: 1px dashed var(--line); border-radius: 4px; }
.score { display: inline-block; min-width: 28px; text-align: center; border-radius: 10px; color: #fff;
         font-weight: 600; padding: 1px 6px; }
.tag { display: inline-block; white-space: nowrap; font-size: 11px; border-radius: 9px; padding: 0 7px; margin: 2px 3px 0 0;
       background: #ddf4ff; color: #0550ae; }
.tag.replaced { background: #dafbe1; color: #116329; }
.tag.error, .tag.dropped { background: #ffebe9; color: #a40e26; }
.key { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
.text div { margin-bottom: 3px; }
.text .label { display: inline-block; width: 74px; color: var(--muted); font-size: 12px; }
del { background: #ffebe9; color: #82071e; }
ins { background: #dafbe1; color: #116329; text-decoration: none; }
.text .err { color: #a40e26; }
.subs { font-size: 12px; white-space: nowrap; }
svg text { font: 11px system-ui, sans-serif; fill: #57606a; }
"""

JS = r"""
(() => {
  const rows = JSON.parse(document.getElementById('rows').textContent);
  const body = document.querySelector('#pairs tbody');
  const q = document.getElementById('q'), lo = document.getElementById('min'), hi = document.getElementById('max');
  const count = document.getElementById('count');
  let sortKey = 'overall', sortDir = 1;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function hue(score) { return `hsl(${Math.max(0, Math.min(10, score)) * 12}, 62%, 42%)`; }
  function line(label, parts) {
    const d = el('div');
    d.append(el('span', 'label', label), ...parts);
    return d;
  }
  function build(r) {
    const tr = el('tr');
    tr.dataset.key = r.key;
    const img = el('td', 'thumb');
    if (r.thumb) { const i = el('img'); i.src = r.thumb; i.alt = r.key; img.append(i); }
    else img.append(el('span', 'noimg', 'no image'));
    const key = el('td');
    key.append(el('div', 'key', r.key));
    if (r.why === 'lowest' || r.why === 'sampled') key.append(el('span', 'tag', r.why === 'lowest' ? 'lowest' : 'sampled'));
    if (r.replaced) key.append(el('span', 'tag replaced', 'replaced'));
    if (r.dropped) key.append(el('span', 'tag dropped', 'dropped'));
    if (r.error) key.append(el('span', 'tag error', 'error'));
    const overall = el('td', 'num');
    if (r.overall === null) overall.append(el('span', 'muted', '\u2013'));
    else { const s = el('span', 'score', r.overall); s.style.background = hue(r.overall); overall.append(s); }
    const subs = el('td', 'subs');
    for (const [name, score, exp] of r.subs) {
      subs.append(el('div', null, `${name}: ${score ?? '\u2013'}` + (exp === null ? '' : ` (${exp.toFixed(2)})`)));
    }
    if (!r.subs.length) subs.append(el('span', 'muted', '\u2013'));
    const text = el('td', 'text');
    text.append(line('caption', [document.createTextNode(r.caption ?? '(not recorded)')]));
    if (r.recaption !== null) {
      const parts = r.diff.length ? r.diff.map(([op, words], i) => {
        const span = el(op === '-' ? 'del' : op === '+' ? 'ins' : 'span', null, words);
        return i ? [document.createTextNode(' '), span] : [span];
      }).flat() : [document.createTextNode(r.recaption)];
      text.append(line('recaption', parts));
    }
    if (r.error) text.append(line('error', [el('span', 'err', r.error)]));
    tr.append(img, key, el('td', 'key', r.shard), overall,
              el('td', 'num', r.expected === null ? '\u2013' : r.expected.toFixed(2)), subs, text);
    return tr;
  }
  for (const r of rows) {
    r.tr = build(r);
    r.hay = [r.key, r.caption ?? '', r.recaption ?? ''].join('\n').toLowerCase();
  }
  function order(x, y) {  // missing values last, whatever the direction
    if (x === y) return 0;
    if (x === null) return 1;
    if (y === null) return -1;
    return (x < y ? -1 : 1) * sortDir;
  }
  function cmp(a, b) {
    return order(a[sortKey], b[sortKey]) || order(a.overall, b.overall) || order(a.expected, b.expected)
      || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  }
  function only() { return document.querySelector('input[name=only]:checked').value; }
  function apply() {
    const needle = q.value.trim().toLowerCase(), mode = only();
    const min = lo.value === '' ? null : Number(lo.value), max = hi.value === '' ? null : Number(hi.value);
    const shown = rows.filter(r => (!needle || r.hay.includes(needle))
      && (min === null || (r.overall !== null && r.overall >= min))
      && (max === null || (r.overall !== null && r.overall <= max))
      && (mode === 'all' || (mode === 'replaced' ? r.replaced : (r.error !== null || r.overall === null))));
    shown.sort(cmp);
    body.replaceChildren(...shown.map(r => r.tr));
    if (!shown.length) {
      const td = el('td', 'muted', 'no rows match the filters'), tr = el('tr');
      td.colSpan = 7;
      tr.append(td);
      body.append(tr);
    }
    count.textContent = `${shown.length} of ${rows.length} rows`;
    for (const th of document.querySelectorAll('th[data-sort]')) {
      if (th.dataset.sort === sortKey) th.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }
  for (const th of document.querySelectorAll('th[data-sort]')) {
    th.addEventListener('click', () => {
      sortDir = th.dataset.sort === sortKey ? -sortDir : 1;
      sortKey = th.dataset.sort;
      apply();
    });
  }
  for (const input of [q, lo, hi]) input.addEventListener('input', apply);
  for (const radio of document.querySelectorAll('input[name=only]')) radio.addEventListener('change', apply);
  apply();
})();
"""
