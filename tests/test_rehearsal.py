"""The Colab path, rehearsed (mmlab.tools.rehearsal): the pretrained cells of 01, 02 and 05 executed in kernels against
a local hub mirror that serves checkpoints of the real classes under the real repository ids. About two minutes.

The request log is the contract: it must equal tests/rehearsal_requests.txt, so a library upgrade that changes what it
asks the hub for shows up as a diff of that file (re-make it with `mmlab rehearse --write tests/rehearsal_requests.txt`
and read the diff)."""

import re
from pathlib import Path

import nbformat
import pytest

from mmlab.tools import rehearsal

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXPECTED_LOG = Path(__file__).with_name("rehearsal_requests.txt")
REAL_HF_HOME = Path.home() / ".cache" / "huggingface" / "hub"


def _fake_ids_in_real_cache() -> list[Path]:
    return [p for p in REAL_HF_HOME.glob("models--*") if p.name in (
        "models--Salesforce--blip2-opt-2.7b", "models--stable-diffusion-v1-5--stable-diffusion-v1-5",
        "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K")] if REAL_HF_HOME.is_dir() else []


@pytest.fixture(scope="module")
def run():
    before = {p: p.stat().st_mtime for p in _fake_ids_in_real_cache()}
    result = rehearsal.rehearse(NOTEBOOKS)
    after = {p: p.stat().st_mtime for p in _fake_ids_in_real_cache()}
    assert after == before, "random weights reached the real hub cache under the real ids"
    return result


def by(run, notebook, name):
    return next(r for r in run.results if r.notebook == notebook and r.run == name)


def test_every_pass_ran_without_error_and_the_mirror_answered_every_request(run):
    assert [(r.notebook, r.run, r.status, r.error) for r in run.results if r.status != "ok"] == []
    assert run.unexpected == []


def test_the_request_log_is_the_contract(run):
    expected, now = EXPECTED_LOG.read_text(), rehearsal.request_log(run.results)
    recorded = next((line for line in expected.splitlines() if line.startswith("# Recorded with")), "# no releases noted")
    assert rehearsal.requests_only(now) == rehearsal.requests_only(expected), (
        f"the libraries asked the hub for other files: {recorded[2:]}; installed: {rehearsal.library_versions()}. "
        "Re-make with `mmlab rehearse --write tests/rehearsal_requests.txt` and read the diff")


def test_every_statement_of_the_tagged_cells_executed_but_the_cuda_only_ones(run):
    assert rehearsal.unexecuted(NOTEBOOKS, run.results) == {}
    for name, texts in rehearsal.CUDA_ONLY.items():  # the exempt lines exist and really did not run
        nb = nbformat.read(next(NOTEBOOKS.glob(f"{name}_*.ipynb")), as_version=4)
        for text in texts:
            cells = [i for i in rehearsal.tagged_cells(nb) if text in nb.cells[i].source]
            assert cells, f"{name}: the exempt line {text!r} is in no tagged cell"
            line = next(n for n, s in enumerate(nb.cells[cells[0]].source.splitlines(), 1) if s.strip() == text)
            assert not any(line in r.lines.get(cells[0], {}) for r in run.results if r.notebook == name)


def test_the_settings_cell_took_the_pretrained_path_because_the_hub_answered(run):
    for r in run.results:
        assert re.search(r"pretrained: MMLAB_PRETRAINED=1, hub http://127\.0\.0\.1:\d+ answered", r.settings_output), r.settings_output


def test_each_checkpoint_row_is_printed_before_its_first_download(run):
    rows = {"01": "pretrained: open_clip ViT-B-32", "02": "pretrained: Salesforce/blip2-opt-2.7b",
            "05": "pretrained: stable-diffusion-v1-5/stable-diffusion-v1-5"}
    for r in run.results:
        assert any(rows[r.notebook] in text for text in r.outputs.values()), (r.notebook, r.run)
        assert rehearsal.announced_first(NOTEBOOKS, r), (r.notebook, r.run)
        downloads = [path for method, path in r.requests if rehearsal.REPOS[r.notebook] in path]
        assert bool(downloads) == ((r.notebook, r.run) != ("02", "default")), (r.notebook, r.run, downloads)


def _tagged_output(run, notebook, name):
    r = by(run, notebook, name)
    nb = nbformat.read(next(NOTEBOOKS.glob(f"{notebook}_*.ipynb")), as_version=4)
    cells = rehearsal.tagged_cells(nb)
    return "".join(r.outputs[i] for i in cells), sum(r.images[i] for i in cells)


def test_what_each_cell_printed_and_showed(run):
    text, _ = _tagged_output(run, "01", "default")
    photos = re.findall(r"^\S+\s+-> (.+) \((\d\.\d\d)\)$", text, flags=re.M)
    assert len(photos) == 7, text  # one line per bundled photo: the label and its probability (noise: random weights)
    text, _ = _tagged_output(run, "02", "default")
    assert "skipped Salesforce/blip2-opt-2.7b: it needs a CUDA GPU" in text
    text, _ = _tagged_output(run, "02", "any-device")
    assert "MMLAB_PRETRAINED_ANY_DEVICE=1: running it on cpu anyway" in text
    assert len([line for line in text.splitlines() if re.match(r"^\S+\s", line) and "pretrained" not in line]) >= 7, text
    text, images = _tagged_output(run, "05", "default")
    assert "scaling_factor 0.18215" in text and "cross_attention_dim 32" in text and images == 0
    text, images = _tagged_output(run, "05", "any-device")
    assert "scaling_factor 0.18215" in text and images == 1  # the pipeline's image, displayed


def test_the_order_check_fails_when_a_download_comes_before_the_row():
    nb = nbformat.read(next(NOTEBOOKS.glob("05_*.ipynb")), as_version=4)
    cell = rehearsal.tagged_cells(nb)[0]
    announce = next(n for n, s in enumerate(nb.cells[cell].source.splitlines(), 1) if "announce(" in s and "import" not in s)
    path = "/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/model_index.json"
    ran = {announce: 10.0, announce + 1: 12.0}
    early = rehearsal.PassResult("05", "default", "ok", requests=[("GET", path)], request_times=[11.0], lines={cell: ran})
    late = rehearsal.PassResult("05", "default", "ok", requests=[("GET", path)], request_times=[13.0], lines={cell: ran})
    assert not rehearsal.announced_first(NOTEBOOKS, early) and rehearsal.announced_first(NOTEBOOKS, late)


def test_statements_count_a_compound_statement_by_its_header():
    source = "if a and b(\n        c):\n    x = 1\nelse:\n    y = f(1,\n          2)\n"
    assert rehearsal.statements(source) == {1: (1, 2), 3: (3,), 5: (5, 6)}
