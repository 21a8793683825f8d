"""Offline by default: the pretrained path is taken only when asked, with a hub that answers. A local HTTP server
plays the hub (HF_ENDPOINT points at it) and records every request it gets."""

import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nbformat
import pytest
import torch

from mmlab import settings
from mmlab.tools import cli


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A local stand-in for the hub: answers every request with 200 and records its path. ``HF_HOME`` is a temporary
    folder: what the hub client writes after talking to this stand-in must not reach the reader's cache."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            requests.append((self.command, self.path))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"{}")

        do_HEAD = do_GET = _answer  # noqa: N815

        def log_message(self, *args):
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("HF_HUB_OFFLINE", "MMLAB_PRETRAINED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield requests
    server.shutdown()
    server.server_close()


def test_not_asked_is_offline_and_sends_nothing(hub):
    assert settings.pretrained_decision() == (False, settings.pretrained_decision()[1])
    assert settings.use_pretrained() is False
    assert "MMLAB_PRETRAINED not set" in settings.pretrained_decision()[1]
    assert hub == [], "without an opt-in, not even the probe may reach the hub"


def test_asked_and_hub_answers(hub, monkeypatch):
    monkeypatch.setenv("MMLAB_PRETRAINED", "1")
    ok, why = settings.pretrained_decision()
    assert ok and "MMLAB_PRETRAINED=1" in why and "answered" in why
    assert hub and hub[0][0] == "HEAD", "the probe goes to HF_ENDPOINT (a mirror), not huggingface.co"


@pytest.mark.parametrize("value", ["0", "no", "false"])
def test_asked_off_explicitly(hub, monkeypatch, value):
    monkeypatch.setenv("MMLAB_PRETRAINED", value)
    assert settings.pretrained_decision() == (False, f"offline: MMLAB_PRETRAINED={value}")


def test_asked_but_hf_hub_offline(hub, monkeypatch):
    monkeypatch.setenv("MMLAB_PRETRAINED", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert settings.pretrained_decision() == (False, "offline: HF_HUB_OFFLINE is set")
    assert hub == []


def test_asked_but_nothing_answers(monkeypatch):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts, never answers
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("MMLAB_PRETRAINED", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    ok, why = settings.pretrained_decision(timeout=3.0)
    elapsed = time.perf_counter() - t0
    silent.close()
    assert not ok and "did not answer within 3 s" in why
    assert elapsed < 6, "the probe gives up after its 3 s timeout; it never hangs"


@pytest.mark.parametrize("cuda", [True, False])
def test_colab(hub, monkeypatch, cuda):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    ok, why = settings.pretrained_decision()
    assert ok is cuda
    assert ("Colab + CUDA" in why) if cuda else ("MMLAB_PRETRAINED not set" in why)
    monkeypatch.setenv("MMLAB_PRETRAINED", "0")  # the reader can still say no on Colab
    assert settings.use_pretrained() is False


THROWAWAY = [
    "from mmlab.settings import pretrained_decision\nPRETRAINED, WHY = pretrained_decision()\nprint(WHY)",
    # a guarded pretrained load, as the five notebooks write it
    "if PRETRAINED:\n    from huggingface_hub import hf_hub_download\n"
    "    hf_hub_download('org/model', 'model.safetensors')",
    "print('done')",
]


def _throwaway(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# throwaway")] + [nbformat.v4.new_code_cell(c) for c in THROWAWAY]
    nbformat.write(nb, folder / "01_throwaway.ipynb")
    return folder


def test_mmlab_run_with_a_reachable_hub_downloads_nothing(hub, tmp_path):
    folder = _throwaway(tmp_path)
    code = cli.main(["run", "--dir", str(folder), "--build", str(tmp_path / "book"), "--no-progress"])
    assert code == 0
    assert not any("model" in path for _, path in hub), hub
    assert hub == []  # not asked: no request at all


def test_mmlab_run_pretrained_flag_reaches_the_hub(hub, tmp_path):
    """The other side of the same switch: --pretrained does take the guarded branch (so the test above can fail)."""
    folder = _throwaway(tmp_path)
    cli.main(["run", "--pretrained", "--dir", str(folder), "--build", str(tmp_path / "book"), "--no-progress"])
    assert any("model.safetensors" in path for _, path in hub), hub
