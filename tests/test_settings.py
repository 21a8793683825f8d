import socket
import threading
import time

import pytest
import torch

from mmlab import cache, files, settings


def test_device_and_seed():
    assert settings.device().type in ("cpu", "cuda", "mps")
    g = settings.seed_everything(3)
    a = torch.rand(3)
    settings.seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        settings.seed_everything(-1)


def test_online_honours_hf_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("HF_HUB_OFFLINE is set: online() must not open a connection")

    monkeypatch.setattr(settings.urllib.request, "urlopen", no_network)
    assert settings.online() is False


@pytest.fixture
def silent_server():
    """A local TCP server that accepts connections and never answers (a hub that hangs)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    th.join()
    for c in conns:
        c.close()
    srv.close()


def test_online_never_hangs(monkeypatch, silent_server):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    assert settings.online(silent_server, timeout=1.0) is False
    assert time.perf_counter() - t0 < 1.5  # the 1 s timeout, not a speed: online() must not wait past it


def test_online_true_for_a_server_that_answers(monkeypatch):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            return None

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.handle_request, daemon=True)
    th.start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert settings.online(f"http://127.0.0.1:{srv.server_address[1]}", timeout=2.0) is True
    th.join(2)
    srv.server_close()


def test_online_refused_port_is_offline(monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert settings.online(f"http://127.0.0.1:{port}", timeout=1.0) is False


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_save_load_round_trip(tmp_path):
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5), "empty": torch.zeros(0), "scalar": torch.tensor(2.5)}
    path = files.save_state(tmp_path / "m.safetensors", tensors, {"steps": 7})
    loaded, meta = files.load_state(path)
    assert meta == {"steps": 7}
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert not list(tmp_path.glob("*.tmp"))  # no temp file left behind
    assert files.load_state(tmp_path / "absent.safetensors") is None


def test_settings_resolves_seeds_and_prints(monkeypatch, capsys):
    monkeypatch.setenv("MMLAB_SEED", "3")
    monkeypatch.setenv("MMLAB_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    try:
        first = settings.settings()
        a = torch.rand(3)
        second = settings.settings()
        assert torch.equal(a, torch.rand(3))  # every RNG seeded with MMLAB_SEED
    finally:
        torch.set_num_threads(before)
    assert first == second and first.seed == 3 and first.threads == 1 and first.pretrained is False
    assert first.device == settings.device()
    out = capsys.readouterr().out
    assert "seed=3 device=" in out and "threads=1; offline: HF_HUB_OFFLINE is set" in out
