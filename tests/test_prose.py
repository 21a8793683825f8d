"""Prose and outputs in step: a figure a notebook's lesson quotes (the 口述版, the body, 追问, the answer card: above
the appendix) is printed by one of its committed outputs, unless it is a constant its code writes (a learning rate, an
EMA decay), or its sentence says where it was measured instead (a seed table, another section's study, a paper).

Figures here are decimals with two or three digits after the point ("0.882", "0.75"), and percentages with a decimal
("57.5 %"): the measured kind. Round numbers and paper figures with a citation are not checked.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIGURE = re.compile(r"(?<![\d.\w])(-?\d\.\d{2,3})(?!\d)|(?<![\d.])(\d{1,2}\.\d) ?%")
ELSEWHERE = re.compile(r"seed table|seeds 0|measured elsewhere|measured when|docs/|recipes\.md|paper|Table|Fig\.|et al|"
                       r"FID|ImageNet|appendix|论文|原文|报告|e\.g\.|例如|init|初始|\bv1\b|SD |CLIP's|released|GPT-4|VQAv2|NLVR2|CIDEr|"
                       r"R@1|state of the art|摘要|abstract|OpenAI|weights|seeds of five|at \w+ seeds", re.I)


def _lesson(nb):
    """Markdown cells above the appendix."""
    out = []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## Appendix"):
            break
        if cell.cell_type == "markdown":
            out.append(cell.source)
    return out


def _printed(nb) -> str:
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") if isinstance(output.get("text", ""), str) else "".join(output["text"]))
            texts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


NUMBER = re.compile(r"(?<![\d.])-?\d+\.\d+(?![\d.])")


def _matches(figure: str, printed: list[str]) -> bool:
    """Whether a printed number, rounded to the figure's decimals, is the figure (as a percentage too)."""
    text = figure.rstrip("%").strip()
    value, decimals = float(text), len(text.split(".")[1])
    for number in printed:
        if len(number.split(".")[1]) < decimals:
            continue
        p = float(number)
        p = abs(p)  # prose writes a sign as "−" (U+2212), which the figure pattern leaves out
        if round(p, decimals) == round(abs(value), decimals) or (figure.endswith("%") and round(100 * p, decimals) == value):
            return True
    return False


def unsourced_figures(nb) -> list[str]:
    printed = NUMBER.findall(_printed(nb))
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    missing = []
    for text in _lesson(nb):
        for sentence in re.split(r"(?<=[.。;；])\s+|\n\s*\n|\n[*-] |\n\d+\. ", text):
            for match in FIGURE.finditer(sentence):
                figure = match.group(1) or match.group(2) + "%"
                if ELSEWHERE.search(sentence):
                    continue
                if _matches(figure, printed) or re.search(rf"(?<![\d.]){re.escape(figure)}(?!\d)", code):
                    continue
                missing.append(f"{figure!r} in: {sentence.strip()[:140]}")
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_quoted_figure_is_printed_or_sourced(path):
    missing = unsourced_figures(nbformat.read(path, as_version=4))
    assert not missing, f"{path.name}: figures quoted but printed by no cell of this run:\n" + "\n".join(missing)


def test_a_typed_in_figure_is_caught():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("The held-out accuracy is 0.912 here; the seed table ranges 0.75-0.93."),
        nbformat.v4.new_code_cell("acc = evaluate()\nprint(f'{acc:.3f}')", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="0.897\n")])])
    assert [m.split()[0] for m in unsourced_figures(nb)] == ["'0.912'"]
    nb.cells[0].source = "The held-out accuracy is 0.897 here, 0.90 rounded, 89.7 % as a share."
    assert unsourced_figures(nb) == []
    nb.cells[0].source = "The held-out accuracy is 0.89 here."  # 0.897 rounds to 0.90, not 0.89
    assert len(unsourced_figures(nb)) == 1


MACHINE_HISTORY = re.compile(r"\b20\d\d-\d\d-\d\d\b|Xeon|EPYC|Ryzen|\bAMX\b|AVX-?(2|512)|\buntil 20\d\d")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_lesson_carries_no_machine_history(path):
    """Above the appendix — the 口述版, the body, 追问, the card and every output there — no date, CPU name or "until":
    the lesson says what is true today; when and where a figure was measured is in the JSON, docs/ and git."""
    found = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## Appendix"):
            break
        texts = [cell.source] + [o.get("text", "") if isinstance(o.get("text", ""), str) else "" for o in cell.get("outputs", [])]
        texts += [str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", [])]
        found += [m.group(0) for t in texts for m in MACHINE_HISTORY.finditer(t)]
    assert not found, f"{path.name}: {sorted(set(found))}"


def appendix_lines(nb) -> int:
    """Markdown lines from the appendix heading on."""
    cells = nb.cells
    start = next((i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Appendix")), len(cells))
    return sum(len(c.source.splitlines()) for c in cells[start:] if c.cell_type == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_appendix_keeps_the_key_decisions_only(path):
    """The recipe's key decisions with their measured reason, in about 40 lines; the history is docs/recipes.md."""
    assert appendix_lines(nbformat.read(path, as_version=4)) <= 45
