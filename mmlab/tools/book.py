"""The HTML book: one page per notebook (titled by its question, with navigation and contents) and an index.

Built with nbconvert (the exporter Jupyter itself uses) and a small template of ours, ``mmlab/templates/book``,
that extends JupyterLab's page. Equations are typeset in the browser by MathJax 3.2.2 (``es5/tex-svg-full.js`` of
npm's ``mathjax`` package, Apache-2.0, shipped in ``mmlab/static/mathjax``): one script, SVG output and so no web
font, copied into the book's ``_static/`` folder, so a page opened from disk asks no other host for anything.

    book/index.html            the five questions (中文 + English), the spoken answers, status, runtime, links
    book/review.html           速记卡 / review sheet: every spoken answer, every answer card and every 追问 question
                               (linked to its answer), read from the notebooks, printable on A4
    book/NN_slug.html          a notebook, with previous / index / next links and a table of contents
    book/summary.json          per notebook: status, seconds, peak memory, per-cell seconds, the asserted figures
    book/_static/mathjax/      MathJax (no CDN)
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from mmlab.files import write_atomic

BOOK_DIR = Path("book")
TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
MATHJAX_FILE = "tex-svg-full.js"
MATHJAX_SHA256 = "a4354ff94fd868aea0cc6eaaa79a57fda0588646fc46ee3700a349ee0a11cbe6"  # npm mathjax@3.2.2
MATHJAX = f"_static/mathjax/{MATHJAX_FILE}"
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_HEADING = re.compile(r'<h2 id="([^"]+)"[^>]*>(.*?)</h2>', re.S)
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Page:
    """What the book shows of a notebook besides its cells: the question and the spoken answers."""

    stem: str
    question_zh: str
    question_en: str
    spoken_zh: str  # the one-minute 口述版 paragraph (markdown)
    spoken_en: str  # the one-minute English spoken answer (markdown)
    short_en: str = ""  # the 30-second English version, if the notebook has one

    @property
    def short_answer(self) -> str:
        """The 30-second English answer (else the spoken answer's first sentence): what the index shows folded."""
        if self.short_en:
            return re.sub(r"^\*\*[^*]+\*\*\s*", "", self.short_en)
        text = re.sub(r"^\*\*[^*]+\*\*\s*", "", self.spoken_en or self.spoken_zh)
        return re.split(r"(?<=[.。])\s(?=[A-Z\u4e00-\u9fff])", text, maxsplit=1)[0]

    @property
    def title(self) -> str:
        return f"{self.question_en} · {self.question_zh}" if self.question_en else self.question_zh or self.stem


def page_of(nb: nbformat.NotebookNode, stem: str) -> Page:
    """Read the question (the first two headings) and the spoken answers from the notebook's first markdown cell."""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    headings = [line.lstrip("#").strip() for line in first.splitlines() if line.startswith("# ")]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", first) if p.strip()]
    zh = [p for p in paragraphs if p.startswith("**口述版")]
    en = [p for p in paragraphs if p.startswith("**Spoken")]
    # Two lengths each (30 seconds, one minute): the book shows the one-minute answer, the index folds the short one.
    spoken_zh = next((p for p in zh if "一分钟" in p.split("**")[1]), zh[0] if zh else "")
    spoken_en = next((p for p in en if "minute" in p.split("**")[1]), en[0] if en else "")
    short_en = next((p for p in en if "30 s" in p.split("**")[1]), "")
    return Page(stem, headings[0] if headings else stem, headings[1] if len(headings) > 1 else "", spoken_zh, spoken_en,
                short_en)


def _progress_text(model_id: str, state: dict) -> str | None:
    """The final line of a tqdm widget (an HBox of description, bar and counter), as tqdm prints it in a terminal."""
    box = state.get(model_id, {}).get("state", {})
    parts = []
    for ref in box.get("children", []):
        child = state.get(str(ref).removeprefix("IPY_MODEL_"), {})
        kind, values = child.get("model_name", ""), child.get("state", {})
        if kind == "HTMLModel":
            parts.append(html.unescape(values.get("value", "")))
        elif kind == "FloatProgressModel" and values.get("max"):
            filled = round(10 * values.get("value", 0) / values["max"])
            parts.append("|" + "█" * filled + " " * (10 - filled) + "|")
    return "".join(parts).strip() or None


def collapse_carriage_returns(text: str) -> str:
    """What a terminal shows of a stream: on each line, only what was written after its last carriage return."""
    return "\n".join(line.rsplit("\r", 1)[-1] if line.rstrip("\r") else line.replace("\r", "")
                     for line in text.split("\n"))


def final_text_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Store progress output as its final text, in place (also returned).

    A progress *widget* becomes the text of its last state (``Loading weights: 100%|██████████| 36/36``) instead of
    the "0%" its plain-text fallback froze at, and the widget state is dropped (GitHub and the book show text, and
    no widget manager is fetched from a CDN); a progress *stream* keeps, per line, the text after its last ``\\r``.
    """
    state = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if _WIDGET_VIEW in data:
                text = _progress_text(data[_WIDGET_VIEW].get("model_id", ""), state)
                del data[_WIDGET_VIEW]
                if text:
                    data["text/plain"] = text
            elif out.get("output_type") == "stream" and "\r" in out.get("text", ""):
                out["text"] = collapse_carriage_returns(out["text"])
    nb.metadata.pop("widgets", None)
    return nb


def install_assets(book: Path) -> None:
    """Copy MathJax into ``book/_static/mathjax/``, checked against its recorded hash, whole or not at all."""
    target = book / "_static" / "mathjax" / MATHJAX_FILE
    source = STATIC / "mathjax" / MATHJAX_FILE
    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != MATHJAX_SHA256:
        raise RuntimeError(f"{source} is not MathJax 3.2.2's {MATHJAX_FILE} (its SHA-256 differs): reinstall mmlab")
    if target.is_file() and target.read_bytes() == data:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
    write_atomic(target.parent / "LICENSE", (STATIC / "mathjax" / "LICENSE").read_bytes())


def _nav(pages: list[Page], i: int) -> str:
    prev = f"<a href='{pages[i - 1].stem}.html' rel='prev'>← {html.escape(pages[i - 1].question_zh)}</a>" if i else "<span></span>"
    nxt = (f"<a href='{pages[i + 1].stem}.html' rel='next'>{html.escape(pages[i + 1].question_zh)} →</a>"
           if i + 1 < len(pages) else "<span></span>")
    return (f"<nav class='mmlab-nav'>{prev}<span><a href='index.html'>☰ 目录 · Index</a> · "
            f"<a href='review.html'>速记卡 · Review sheet</a></span>{nxt}</nav>")


def _toc(body: str) -> str:
    items = "".join(f"<li><a href=\"#{anchor}\">{_TAG.sub('', text).replace('¶', '').strip()}</a></li>"
                    for anchor, text in _HEADING.findall(body))
    return f"<details class='mmlab-toc' open><summary>Contents · 目录</summary><ul>{items}</ul></details>" if items else ""


def write_page(nb: nbformat.NotebookNode, pages: list[Page], i: int, book: Path) -> Path:
    """``book/<stem>.html`` for ``pages[i]``: titled by its question, with navigation and a table of contents."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name="book", mathjax_url=MATHJAX)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": pages[i].title}})
    body = body.replace("<!-- mmlab:nav -->", _nav(pages, i)).replace("<!-- mmlab:toc -->", _toc(body), 1)
    target = book / f"{pages[i].stem}.html"
    write_atomic(target, body.encode("utf-8"))
    return target


_INDEX_CSS = """
body { font: 16px/1.55 system-ui, "Noto Sans CJK SC", sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #1f2328; }
article { border: 1px solid #d0d7de; border-radius: 8px; padding: 0.8em 1.2em; margin: 1em 0; }
article h2 { margin: 0.2em 0 0 0; font-size: 1.25em; } article h3 { margin: 0 0 0.5em 0; font-weight: normal; color: #59636e; }
.meta { font-size: 0.9em; color: #59636e; } .ok { color: #1a7f37; } .failed, .interrupted { color: #cf222e; }
"""


def write_index(pages: list[Page], rows: dict[str, dict], book: Path) -> Path:
    """``book/index.html``: per question its two titles, the spoken answers, status, runtime and a link.

    ``rows`` maps a notebook's stem to ``status`` (ok / failed / interrupted / stored), ``seconds``, ``peak_mb``,
    ``error`` and ``when``; a notebook missing there is listed without them.
    """
    from nbconvert.filters.markdown import markdown2html_mistune

    articles = []
    for n, page in enumerate(pages, 1):
        row = rows.get(page.stem, {})
        status = row.get("status", "")
        meta = [f"<span class='{html.escape(status)}'>{html.escape(status)}</span>"] if status else []
        if row.get("seconds"):
            meta.append(f"{row['seconds']:.0f} s on a CPU")
        if row.get("peak_mb"):
            meta.append(f"peak {row['peak_mb']:.0f} MB")
        if row.get("when"):
            meta.append(f"executed {html.escape(row['when'])}")
        if row.get("error"):
            meta.append(f"<code>{html.escape(row['error'])}</code>")
        answers = "".join(markdown2html_mistune(text) for text in (page.spoken_zh, page.spoken_en) if text)
        articles.append(
            f"<article id='q{n}'><h2><a href='{page.stem}.html'>{html.escape(page.question_zh)}</a></h2>"
            f"<h3>{html.escape(page.question_en)}</h3>{markdown2html_mistune(page.short_answer)}"
            f"<details><summary>口述版 · Spoken answer (one minute)</summary>{answers}</details>"
            f"<p class='meta'>{' · '.join([f'<a href={page.stem}.html>Open the notebook →</a>', *meta])}</p></article>")
    doc = ("<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
           "<meta name='viewport' content='width=device-width, initial-scale=1'>"
           "<title>mmlab · 多模态常见面试题 · Multimodal interview questions, run for real</title>"
           f"<style>{_INDEX_CSS}</style></head><body>"
           "<h1>多模态常见面试题 · Multimodal interview questions, answered by running real small models</h1>"
           "<p>Each question is a notebook that trains tiny versions of the real models (open_clip, transformers, "
           "diffusers, shap) on generated data and asserts what it teaches. Read the spoken answer, then open the "
           "proof. Revising? <a href='review.html'>速记卡 · Review sheet</a>: every spoken answer, answer card and "
           "follow-up question on one printable page.</p>" + "".join(articles) + "</body></html>")
    target = book / "index.html"
    write_atomic(target, doc.encode("utf-8"))
    return target


_FOLLOW_UP = re.compile(r"^\s*(\d+)\.\s+\*\*(.+?)\*\*", re.M)


def _section(nb: nbformat.NotebookNode, starts: tuple[str, ...]) -> list[str]:
    """The markdown of the section whose ``## `` heading starts with one of ``starts``, up to the next ``## ``
    heading (its heading line left out); empty when the notebook has none."""
    out, inside = [], False
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        if cell.source.startswith("## "):
            if inside:
                break
            inside = cell.source.startswith(starts)
            if inside:
                out.append(cell.source.split("\n", 1)[1] if "\n" in cell.source else "")
        elif inside:
            out.append(cell.source)
    return out


def review_of(nb: nbformat.NotebookNode) -> dict:
    """What the review sheet takes from a notebook: the spoken answers (every length, both languages), the answer
    card, and the 追问 questions ``(number, question)`` — all read from its cells, never a second copy."""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    spoken = [p.strip() for p in re.split(r"\n\s*\n", first) if p.strip().startswith(("**口述版", "**Spoken"))]
    card = _section(nb, ("## Interview answer",))
    follow_ups = [(int(n), q.strip()) for text in _section(nb, ("## 追问",)) for n, q in _FOLLOW_UP.findall(text)]
    return {"spoken": spoken, "card": card, "follow_ups": follow_ups}


def _anchor(page_html: str, starts: str) -> str:
    """The id of the page's ``<h2>`` whose text starts with ``starts`` ("" when there is none)."""
    for anchor, text in _HEADING.findall(page_html):
        if _TAG.sub("", text).strip().startswith(starts):
            return anchor
    return ""


_REVIEW_CSS = """
body { font: 15px/1.5 system-ui, "Noto Sans CJK SC", sans-serif; max-width: 60em; margin: 1.5em auto; padding: 0 1em; color: #1f2328; }
section { border-top: 2px solid #d0d7de; margin-top: 1.2em; } h2 { margin: 0.6em 0 0.2em; font-size: 1.2em; }
h3 { font-size: 1em; margin: 0.8em 0 0.2em; color: #59636e; } p { margin: 0.3em 0; } ol { margin: 0.2em 0; padding-left: 1.6em; }
.q-en { color: #59636e; margin: 0; } nav { margin-bottom: 1em; }
@page { size: A4; margin: 10mm 11mm; }
@media print { body { font-size: 8.5pt; line-height: 1.3; max-width: none; margin: 0; } nav { display: none; }
  h2 { break-after: avoid; } h3 { break-after: avoid; margin-top: 0.5em; } a { color: inherit; text-decoration: none; } }
"""


_CJK_BREAK = re.compile(r"(?<=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])\n(?=[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef])")


def _md(text: str) -> str:
    """Markdown to HTML, a line break between two Chinese characters dropped (HTML would show it as a space)."""
    from nbconvert.filters.markdown import markdown2html_mistune

    return markdown2html_mistune(_CJK_BREAK.sub("", text))


def write_review(notebooks: list[nbformat.NotebookNode], pages: list[Page], book: Path) -> Path:
    """``book/review.html``: per question its spoken answers, its answer card and its 追问 questions, each linked to
    its answer in the notebook's page. Reads the pages already written to find their anchors."""

    sections = []
    for nb, page in zip(notebooks, pages):
        review = review_of(nb)
        written = book / f"{page.stem}.html"
        anchor = _anchor(written.read_text(encoding="utf-8"), "追问") if written.is_file() else ""
        link = f"{page.stem}.html" + (f"#{anchor}" if anchor else "")
        questions = "".join(f"<li value='{n}'><a href='{html.escape(link, quote=True)}'>{_md(q).strip()[3:-4]}</a></li>"
                            for n, q in review["follow_ups"])
        sections.append(
            f"<section id='{page.stem}'><h2><a href='{page.stem}.html'>{html.escape(page.question_zh)}</a></h2>"
            f"<p class='q-en'>{html.escape(page.question_en)}</p><h3>口述版 · Spoken answers</h3>"
            + "".join(_md(p) for p in review["spoken"])
            + "<h3>答题卡 · Answer card</h3>" + "".join(_md(t) for t in review["card"])
            + f"<h3>追问 · Follow-up questions (answers in the notebook)</h3><ol>{questions}</ol></section>")
    doc = ("<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
           "<meta name='viewport' content='width=device-width, initial-scale=1'>"
           "<title>速记卡 · Review sheet · mmlab</title>"
           f"<style>{_REVIEW_CSS}</style></head><body><nav><a href='index.html'>☰ 目录 · Index</a></nav>"
           "<h1>速记卡 · Review sheet</h1><p>The five spoken answers, the five answer cards and every follow-up question, "
           "read from the notebooks; each question links to its answer. Print it (A4) to revise on paper.</p>"
           + "".join(sections) + "</body></html>")
    target = book / "review.html"
    write_atomic(target, doc.encode("utf-8"))
    return target


def build(notebooks: list[tuple[Path, nbformat.NotebookNode]], book: Path, rows: dict[str, dict]) -> Path:
    """Write every page and the index; ``notebooks`` are (path, executed notebook) in reading order."""
    book.mkdir(parents=True, exist_ok=True)
    install_assets(book)
    pages = [page_of(nb, path.stem) for path, nb in notebooks]
    for i, (_, nb) in enumerate(notebooks):
        write_page(final_text_outputs(nb), pages, i, book)
    write_review([nb for _, nb in notebooks], pages, book)
    return write_index(pages, rows, book)
