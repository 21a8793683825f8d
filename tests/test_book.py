"""The HTML book: progress stored as final text, pages with questions, navigation and contents, and a real
browser opening it offline (headless Chromium; skipped, with the reason, where none is installed)."""

import importlib.util
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest

from mmlab.tools import book, cli

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = ROOT / "build" / "browser-test"


def _widget_notebook():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("load()")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "box", "version_major": 2, "version_minor": 0},
            "text/plain": "Loading weights:   0%|          | 0/36 [00:00<?, ?it/s]"}),
        nbformat.v4.new_output("stream", name="stderr", text="train:  50%|#####     | 1/2\rtrain: 100%|##########| 2/2\n"),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# 问\n# Q\n\n**口述版.** 答。\n\n**Spoken answer (English).** A. B."), cell]
    state = {"box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
             "l": {"model_name": "HTMLModel", "state": {"value": "Loading weights: 100%"}},
             "p": {"model_name": "FloatProgressModel", "state": {"value": 36.0, "max": 36.0}},
             "r": {"model_name": "HTMLModel", "state": {"value": "36/36 [00:00&lt;00:00, 900it/s]"}}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state, "version_major": 2}}
    return nb


def test_progress_is_stored_as_its_final_text():
    nb = book.final_text_outputs(_widget_notebook())
    widget, stream = nb.cells[1].outputs
    assert widget.data == {"text/plain": "Loading weights: 100%|██████████|36/36 [00:00<00:00, 900it/s]"}
    assert stream.text == "train: 100%|##########| 2/2\n"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_both_questions_and_spoken_answers(path):
    page = book.page_of(nbformat.read(path, as_version=4), path.stem)
    assert re.search(r"[\u4e00-\u9fff]", page.question_zh), page.question_zh  # the Chinese question
    assert page.question_en and not re.search(r"[\u4e00-\u9fff]", page.question_en), page.question_en  # English
    assert page.spoken_zh.startswith("**口述版") and "一分钟" in page.spoken_zh.split("**")[1]
    assert page.spoken_en.startswith("**Spoken") and "one minute" in page.spoken_en.split("**")[1]
    assert page.short_en.startswith("**Spoken") and "· 30 " in page.short_en.split("**")[1]  # the 30-second version
    assert "et al" not in page.short_answer[-8:]  # the folded answer is not cut inside a citation
    assert len(page.short_answer) > 30 and page.title.startswith(page.question_en)


def test_committed_notebooks_store_no_widget_state():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert "widgets" not in nb.metadata, f"{path.name}: widget state stored (re-run `mmlab run --inplace`)"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The book of the committed notebooks (`mmlab book`: stored outputs, nothing executed)."""
    folder = tmp_path_factory.mktemp("book")
    assert cli.main(["book", "--book", str(folder), "--dir", str(ROOT / "notebooks")]) == 0
    return folder


def test_book_pages_have_titles_navigation_and_no_outside_resource(built):
    index = (built / "index.html").read_text()
    for path in NOTEBOOKS:
        page = (built / f"{path.stem}.html").read_text()
        question = book.page_of(nbformat.read(path, as_version=4), path.stem)
        assert f"href='{path.stem}.html'" in index and question.question_en in index
        title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
        assert question.question_en in title
        assert "href='index.html'" in page and "class='mmlab-toc'" in page
        # every script, stylesheet and image comes from the book's folder or is inline
        for url in re.findall(r"<(?:script|link|img)\b[^>]*?(?:src|href)=[\"']([^\"']+)", page):
            assert not re.match(r"(https?:)?//", url), f"{path.stem} loads {url}"


def test_book_in_a_real_browser(built):
    """Headless Chromium opens the index and two pages from disk: no console error, no request outside the book,
    equations typeset, every image loaded, every navigation and contents link resolving. Screenshots: build/browser-test."""
    missing = ("no Chromium installed (Debian: apt-get install chromium fonts-noto-cjk)" if CHROMIUM is None else
               "playwright is not installed (pip install -e '.[dev]')" if importlib.util.find_spec("playwright") is None else "")
    if missing:
        (pytest.fail if os.environ.get("MMLAB_REQUIRE_BROWSER") == "1" else pytest.skip)(missing)
    import playwright.sync_api as playwright
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    root = built.resolve().as_uri() + "/"
    pages = ["index.html", "review.html", "01_clip_dalle.html", "05_stable_diffusion.html"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems, outside = [], []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on("request", lambda r: outside.append(r.url) if not (r.url.startswith(root) or r.url.startswith("data:")) else None)
            for name in pages:
                page.goto(root + name)
                page.wait_for_load_state("load")
                if name not in ("index.html", "review.html"):
                    page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
                    page.evaluate("MathJax.startup.promise")  # typesetting done
                    assert page.locator("mjx-container svg").count() >= 5, f"{name}: equations not rendered"
                    assert page.locator("mjx-merror, [data-mjx-error]").count() == 0, f"{name}: an equation failed"
                broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
                assert broken == 0, f"{name}: {broken} images did not load"
                for href in page.evaluate("Array.from(document.querySelectorAll('nav a, .mmlab-toc a, article a, section a, p a'))"
                                          ".map(a => a.href)"):
                    target = urlparse(href)
                    assert href.startswith(root), f"{name}: navigation leaves the book: {href}"
                    assert Path(unquote(target.path)).is_file(), f"{name}: broken link {href}"
                    if target.fragment and target.path != urlparse(page.url).path:  # the review sheet's links to answers
                        assert f'id="{target.fragment}"' in Path(unquote(target.path)).read_text() or \
                            f'id="{unquote(target.fragment)}"' in Path(unquote(target.path)).read_text(), href
                    if target.fragment and target.path == urlparse(page.url).path:  # the contents' links
                        # as a browser does: the fragment as written, then percent-decoded (nbconvert encodes ids)
                        found = page.evaluate("f => !!(document.getElementById(f) || document.getElementById(decodeURIComponent(f)))",
                                              target.fragment)
                        assert found, f"{name}: no anchor #{target.fragment}"
                page.screenshot(path=str(SCREENSHOTS / name.replace(".html", ".png")), full_page=name == "index.html")
                if name == "review.html":  # printed as a reader would print it: A4, at most about eight pages
                    pdf = page.pdf(format="A4", print_background=False)
                    (SCREENSHOTS / "review.pdf").write_bytes(pdf)
                    pages_printed = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
                    assert 1 <= pages_printed <= 8, f"the review sheet prints on {pages_printed} A4 pages"
            assert problems == [], problems
            assert outside == [], f"requests outside the book: {outside}"
        finally:
            browser.close()


def test_the_review_sheet_holds_every_spoken_answer_card_and_follow_up(built):
    sheet = (built / "review.html").read_text()
    assert "href='review.html'" in (built / "index.html").read_text()
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        review = book.review_of(nb)
        assert len(review["spoken"]) == 4, path.stem  # two lengths, 中文 and English
        assert review["card"] and len(review["follow_ups"]) >= 8, path.stem
        assert [n for n, _ in review["follow_ups"]] == list(range(1, len(review["follow_ups"]) + 1)), path.stem
        assert f"<section id='{path.stem}'>" in sheet and "href='review.html'" in (built / f"{path.stem}.html").read_text()
        assert sheet.count(f"href='{path.stem}.html#") == len(review["follow_ups"]), path.stem  # each linked to its answer
