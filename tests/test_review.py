"""`python -m runtime.review` on a real demo-model run: the histograms count every row as pyarrow does,
the sample stays bounded, and the page, opened in a real headless Chromium (selenium), loads without
console errors, shows the lowest-scored rows with decoded thumbnails, sorts, filters, and keeps a
caption holding `<script>` as text."""

from __future__ import annotations

import base64
import io
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from runtime.demo import DEMO_MODEL
from runtime.demo.shards import pairs, write_webdataset
from runtime.review import build_report, main
from runtime.review import page as review_page, verdicts as review_verdicts
from runtime.review.inputs import thumbnail
from runtime.review.page import word_diff
from runtime.review.survey import survey
from runtime.review.verdicts import units
from runtime.score import main as score
from tests.data_shards import FAST, rewrite_tar

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> a plate of pasta'
LOWEST, SAMPLE = 4, 3


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Two WebDataset shards of 10 pairs scored by the demo model: one caption holds markup, one image is corrupt."""
    root = tmp_path_factory.mktemp("review")
    data = {s: pairs(s, 10) for s in range(2)}
    data[0][3]["caption"] = EVIL
    for s, rows in data.items():
        write_webdataset(root / "shards", s, rows)
    broken = data[1][6]["key"]
    rewrite_tar(root / "shards" / "00001.tar", lambda n, d: b"not an image" if n == f"{broken}.jpg" else d)
    assert score([f"--input={root / 'shards'}", f"--output={root / 'verdicts'}", f"--model={DEMO_MODEL}",
                  "--enhance-below=6", f"--enhanced-output={root / 'enhanced'}", *FAST]) == 0
    table = pa.concat_tables([pq.read_table(p) for p in sorted((root / "verdicts").glob("*.aitqe.parquet"))],
                             promote_options="default")
    captions = {p["key"]: p["caption"] for rows in data.values() for p in rows}
    return root, table, captions, broken


@pytest.fixture(scope="module")
def report(demo_run):
    root = demo_run[0]
    said = build_report(root / "verdicts", root / "report.html", str(root / "shards"), lowest=LOWEST, sample=SAMPLE)
    return root / "report.html", said


def lowest_keys(table: pa.Table, n: int) -> list[str]:
    scored = table.filter(pc.is_valid(table["overall"]))
    order = [("overall", "ascending"), ("overall_expected", "ascending"), ("key", "ascending")]
    return scored.sort_by(order).column("key").to_pylist()[:n]


def test_histograms_count_every_row_as_pyarrow_does(demo_run):
    root, table = demo_run[:2]
    got = survey(units(root / "verdicts"), LOWEST, SAMPLE, seed=0)
    assert dict(got.total.counts) == {r["values"]: r["counts"] for r in pc.value_counts(table["overall"].drop_null()).to_pylist()}
    assert got.total.rows == table.num_rows == 20 and got.total.unscored == table["overall"].null_count == 1
    for name, hist in got.shards.items():
        part = table.filter(pc.equal(table["shard"], f"{name}.tar"))["overall"]
        assert hist.rows == len(part) and sum(hist.counts.values()) == len(part) - part.null_count


def test_sampling_is_bounded_seeded_and_keeps_the_lowest(tmp_path, monkeypatch):
    monkeypatch.setattr(review_verdicts, "CHUNK", 700)  # many chunks: the running selection is merged across them
    n = 5000
    rng = __import__("numpy").random.default_rng(1)
    overall = [None if i % 97 == 0 else int(v) for i, v in enumerate(rng.integers(0, 11, n))]
    table = pa.table({"key": [f"k{i:05d}" for i in range(n)], "overall": pa.array(overall, pa.int32()),
                      "overall_expected": rng.random(n) * 10, "replaced": [i % 7 == 0 for i in range(n)]})
    for i in range(3):
        pq.write_table(table.slice(i * 2000, 2000), tmp_path / f"{i:05d}.aitqe.parquet")
    found = units(tmp_path)
    got = survey(found, lowest=10, sample=25, seed=3)
    whys = list(got.picks.values())
    assert {w: whys.count(w) for w in set(whys)} == {"lowest": 10, "replaced": 25, "no score": 25, "sampled": 25}
    keys = {(u, pos): f"k{u * 2000 + pos:05d}" for u, pos in got.picks}
    assert sorted(keys[p] for p, w in got.picks.items() if w == "lowest") == sorted(lowest_keys(table, 10))
    for p, w in got.picks.items():
        row = table.slice(int(keys[p][1:]), 1).to_pylist()[0]
        assert {"lowest": row["overall"] is not None, "replaced": row["replaced"],
                "no score": row["overall"] is None and not row["replaced"],
                "sampled": row["overall"] is not None and not row["replaced"]}[w]
    assert survey(found, lowest=10, sample=25, seed=3).picks == got.picks
    assert survey(found, lowest=10, sample=25, seed=4).picks != got.picks
    monkeypatch.setattr(review_page, "MAX_SHARDS", 2)
    build_report(tmp_path, tmp_path / "r.html", lowest=10, sample=25, seed=3)
    text = (tmp_path / "r.html").read_text()
    assert "1 more are counted in the totals" in text and text.count('<td class="key">0000') == 2
    assert len(json_rows(tmp_path / "r.html")) == 10 + 3 * 25


def test_thumbnails_are_small_upright_jpegs_or_none(tmp_path):
    from PIL import Image

    png = tmp_path / "a.png"
    Image.new("RGBA", (300, 120), (255, 0, 0, 0)).save(png)
    photo = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show upright
    Image.new("RGB", (200, 100), "blue").save(photo, format="JPEG", exif=exif)
    for image, size in ((png, (64, 26)), (photo.getvalue(), (32, 64)), (Image.new("L", (10, 10)), (10, 10))):
        uri = thumbnail(image, 64)
        assert uri.startswith("data:image/jpeg;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size == size
    assert thumbnail(b"not an image", 64) is None and thumbnail(tmp_path / "missing.png", 64) is None


def test_word_diff_marks_deleted_and_inserted_words():
    assert word_diff("a red  cat on a mat", "a big red cat on the mat") == [
        ["=", "a"], ["+", "big"], ["=", "red cat on"], ["-", "a"], ["+", "the"], ["=", "mat"]]
    assert word_diff(None, "x") == []


def test_report_says_what_it_shows_and_escapes_captions(demo_run, report):
    path, said = report
    assert said.startswith(f"showing {len(json_rows(path))} of 20 pairs (4 lowest-scored")
    text = path.read_text()
    assert "https://" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert text.count("<script") == 2 and "window.__pwned" in text and "<img src=x" not in text


def json_rows(path: Path) -> list[dict]:
    block = path.read_text().split('<script type="application/json" id="rows">', 1)[1].split("</script>", 1)[0]
    return json.loads(block)


def test_pairs_file_run_gets_images_and_captions(tmp_path, capsys):
    data = pairs(0, 3)
    lines = []
    for p in data:
        (tmp_path / f"{p['key']}.jpg").write_bytes(p["jpg"])
        lines.append(json.dumps({"id": p["key"], "image": f"{p['key']}.jpg", "caption": p["caption"]}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines + ['{"id": "bad"}']) + "\n")
    assert score([f"--input={tmp_path / 'pairs.jsonl'}", f"--output={tmp_path / 'v.jsonl'}", f"--model={DEMO_MODEL}",
                  *FAST]) == 0
    capsys.readouterr()
    assert main(["--verdicts", str(tmp_path / "v.jsonl"), "--input", str(tmp_path / "pairs.jsonl"),
                 "--output", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'r.html'}: showing 4 of 4 pairs (3 lowest-scored, " \
        "1 without a score), 3 with an image"
    rows = {r["key"]: r for r in json_rows(tmp_path / "r.html")}
    assert set(rows) == {p["key"] for p in data} | {"bad"}
    assert all(rows[p["key"]]["caption"] == p["caption"] and rows[p["key"]]["thumb"] for p in data)
    assert rows["bad"]["error"] and rows["bad"]["thumb"] is None


def test_recorded_caption_replaced_dropped_note_and_settings_are_shown(tmp_path):
    rows = [{"key": "a", "caption": "old words here", "overall": 2, "recaption": "new words here", "replaced": True,
             "dropped": False, "note": "demo model", "sub_scores": [("text", 3)], "sub_scores_expected": [("text", 2.5)]},
            {"key": "b", "caption": None, "overall": None, "error": "image: not an image", "replaced": False,
             "dropped": True, "note": "demo model"}]
    schema = pa.schema([("key", pa.string()), ("caption", pa.string()), ("overall", pa.int32()),
                        ("recaption", pa.string()), ("replaced", pa.bool_()), ("dropped", pa.bool_()),
                        ("note", pa.string()), ("sub_scores", pa.map_(pa.string(), pa.int32())),
                        ("sub_scores_expected", pa.map_(pa.string(), pa.float64())), ("error", pa.string())])
    run = json.dumps({"enhance_below": 6, "engine": None})
    table = pa.Table.from_pylist(rows, schema=schema.with_metadata({"aitqe.run": run}))
    pq.write_table(table, tmp_path / "00000.aitqe.parquet")
    build_report(tmp_path, tmp_path / "r.html")
    got = {r["key"]: r for r in json_rows(tmp_path / "r.html")}
    assert (got["a"]["replaced"], got["a"]["dropped"], got["b"]["dropped"]) == (True, False, True)
    assert got["a"]["diff"] == [["-", "old"], ["+", "new"], ["=", "words here"]] and got["a"]["note"] == "demo model"
    assert got["a"]["subs"] == [["text", 3, 2.5]] and got["b"]["thumb"] is None
    text = (tmp_path / "r.html").read_text()
    assert "<dt>enhance_below</dt><dd>6</dd>" in text and '<div class="note">demo model</div>' in text


@pytest.mark.parametrize("argv, words", [
    (["--verdicts", "missing"], "no *.aitqe.parquet files"),
    (["--verdicts", "."], "no *.aitqe.parquet files"),
    (["--verdicts", "{run}/verdicts", "--input", "{tmp}/pairs.jsonl"], "a pairs file, but --verdicts holds shard verdicts"),
    (["--verdicts", "{run}/verdicts", "--input", "{run}/missing"], "no such shard"),
    (["--verdicts", "{tmp}/pairs.jsonl", "--input", "{run}/shards"], "not a pairs file"),
])
def test_bad_verdicts_and_inputs_are_one_line_errors(demo_run, tmp_path, capsys, argv, words):
    (tmp_path / "pairs.jsonl").write_text("")
    argv = [a.format(run=demo_run[0], tmp=tmp_path) for a in argv]
    assert main([*argv, "--output", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and words in err, err


needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                    "(apt-get install chromium chromium-driver): the browser checks need it")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                     "--window-size=1400,1000"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def page(browser, report):
    browser.get(report[0].as_uri())
    return browser


def shown(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#pairs tbody tr[data-key]')].map(r => r.dataset.key)")


def overall_of(driver) -> list[int | None]:
    return driver.execute_script("return [...document.querySelectorAll('#pairs tbody tr[data-key] td:nth-child(4)')]"
                                 ".map(td => td.querySelector('.score') ? Number(td.textContent) : null)")


@needs_chromium
def test_page_loads_clean_and_shows_the_lowest_rows_with_images(page, demo_run, report):
    table, broken = demo_run[1], demo_run[3]
    assert [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    keys = shown(page)
    assert keys[:LOWEST] == lowest_keys(table, LOWEST)  # sorted by overall, ascending, at first
    assert len(keys) == len(json_rows(report[0])) and broken in keys
    widths = page.execute_script("return [...document.querySelectorAll('#pairs img')].map(i => i.naturalWidth)")
    assert len(widths) == len(keys) - 1 and all(w > 0 for w in widths)
    assert page.find_element("css selector", f'tr[data-key="{broken}"] .noimg').text == "no image"
    assert page.find_element("id", "showing").text.startswith(f"showing {len(keys)} of 20 pairs")


@needs_chromium
def test_sorting_by_overall(page):
    header = page.find_element("css selector", 'th[data-sort="overall"]')
    header.click()
    scores = overall_of(page)
    assert scores[-1] is None and scores[:-1] == sorted(scores[:-1], reverse=True)
    header.click()
    scores = overall_of(page)
    assert scores[-1] is None and scores[:-1] == sorted(scores[:-1])


@needs_chromium
def test_text_score_and_toggle_filters(page, demo_run):
    table, captions, broken = demo_run[1], demo_run[2], demo_run[3]
    rows = {r["key"]: r for r in table.to_pylist()}
    everything = set(shown(page))
    page.find_element("id", "q").send_keys("CIRCLE")
    want = {k for k in everything if "circle" in f"{k}\n{captions[k]}\n{rows[k]['recaption'] or ''}".lower()}
    assert want and set(shown(page)) == want
    page.find_element("id", "q").clear()
    page.execute_script("document.getElementById('q').dispatchEvent(new Event('input'))")
    page.find_element("id", "min").send_keys("3")
    page.find_element("id", "max").send_keys("5")
    assert set(shown(page)) == {k for k in everything if rows[k]["overall"] is not None and 3 <= rows[k]["overall"] <= 5}
    page.get(page.current_url)
    page.find_element("css selector", 'input[name=only][value="errors"]').click()
    assert shown(page) == [broken]
    page.find_element("css selector", 'input[name=only][value="replaced"]').click()
    assert set(shown(page)) == {k for k in everything if rows[k].get("replaced")}


@needs_chromium
def test_a_caption_with_markup_stays_text(page, demo_run):
    key = pairs(0, 10)[3]["key"]
    assert key in shown(page)
    assert page.execute_script("return window.__pwned") is None
    assert page.execute_script("return document.querySelectorAll('script').length") == 2
    assert page.execute_script("return document.querySelectorAll('#pairs tbody img:not([src^=\"data:image/jpeg\"])').length") == 0
    assert EVIL in page.find_element("css selector", f'tr[data-key="{key}"] td.text').text
