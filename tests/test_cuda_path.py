"""The CUDA path, safe by construction, tested on a CPU: TF32 off, clocks that wait for the device, cache keys that
name the device, a training loop that reads the loss back in batches, and the smoke switch."""

import torch
from torch.overrides import TorchFunctionMode

from mmlab import cache, settings
from mmlab.train import READ_EVERY, train

CUDA = torch.device("cuda")  # only its name is used: nothing here allocates on it


def test_settings_turns_tf32_off_on_cuda_and_says_so(monkeypatch, capsys):
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.fp32_precision
    monkeypatch.setattr(settings, "device", lambda: CUDA)
    monkeypatch.setattr(settings, "pretrained_decision", lambda: (False, "offline: test"))
    try:
        settings.settings()
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert torch.get_float32_matmul_precision() == "highest"
        assert "TF32 off" in capsys.readouterr().out
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.fp32_precision = before


def test_settings_leaves_tf32_alone_on_the_cpu(monkeypatch, capsys):
    before = torch.backends.cuda.matmul.fp32_precision
    monkeypatch.setattr(settings, "pretrained_decision", lambda: (False, "offline: test"))
    settings.settings()
    assert torch.backends.cuda.matmul.fp32_precision == before and "TF32" not in capsys.readouterr().out


def test_clock_waits_for_cuda_before_reading_the_time(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    settings.clock(CUDA)
    assert synced == [CUDA]
    settings.clock(torch.device("cpu"))
    settings.clock()
    assert synced == [CUDA]  # the CPU's clock does not synchronize anything


def test_the_cache_key_names_the_device_type_except_the_cpu(monkeypatch):
    recipe = {"kind": "toy", "size": 3}
    assert cache.keyed(recipe, torch.device("cpu")) == recipe  # CPU caches made before stay valid
    assert cache.keyed(recipe, CUDA) == {**recipe, "device": "cuda"}
    assert cache.artefact_dir("toy", cache.keyed(recipe, CUDA)) != cache.artefact_dir("toy", recipe)
    monkeypatch.setenv("MMLAB_SMOKE", "1")
    assert cache.keyed(recipe, torch.device("cpu"))["smoke"] is True  # a few steps' model is another artefact


def test_cached_keys_by_the_device_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path))
    built = []

    def build():
        built.append(1)
        return {"w": torch.ones(2)}

    def save(obj, folder):
        from safetensors.torch import save_file
        save_file(obj, folder / "w.safetensors")

    def load(folder):
        from safetensors.torch import load_file
        return load_file(folder / "w.safetensors")

    cache.cached("toy", {"n": 1}, build, save, load, device=torch.device("cpu"))
    cache.cached("toy", {"n": 1}, build, save, load, device=CUDA)  # trained on a GPU: another model, built again
    cache.cached("toy", {"n": 1}, build, save, load, device=torch.device("cpu"))
    assert len(built) == 2 and len(list(tmp_path.glob("toy-*"))) == 2


class HostReads(TorchFunctionMode):
    """Counts the calls that copy a tensor to the host (each waits for the device)."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("item", "tolist", "__bool__", "__float__", "__int__"):
            self.reads += 1
        return func(*args, **(kwargs or {}))


def _toy_training(steps, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return train(model, lambda s: (x, y), lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), opt, steps, progress=False, **kw)


def test_training_reads_the_loss_back_in_batches_not_every_step():
    steps = 4 * READ_EVERY
    with HostReads() as reads:
        history = _toy_training(steps)
    assert len(history.losses) == steps and history.losses[0] > history.losses[-1]
    assert reads.reads <= steps // READ_EVERY + 1, reads.reads  # one read per READ_EVERY steps, not one per step


def test_a_nan_loss_is_reported_with_its_step():
    import pytest

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = lambda m, b: m.weight.sum() * (float("nan") if b == 7 else 1.0)  # noqa: E731
    with pytest.raises(FloatingPointError, match="loss became nan at step 7"):
        train(model, lambda s: s, loss, opt, 30, progress=False)


def test_training_seconds_read_a_synchronized_clock(monkeypatch):
    import mmlab.train

    devices = []
    monkeypatch.setattr(mmlab.train, "clock", lambda device=None: devices.append(device) or 0.0)
    _toy_training(3)
    assert devices and all(d == torch.device("cpu") for d in devices)  # the model's device, every time


def test_a_smoke_run_stops_training_early_and_only_reports_claims(monkeypatch, capsys):
    from mmlab import claims

    monkeypatch.setenv("MMLAB_SMOKE", "1")
    assert len(_toy_training(50).losses) == settings.SMOKE_STEPS
    assert not claims.enforced()
    claims.check("a bar that fails", 0.1, ">", 0.5)  # reported, not asserted
    assert "0.1" in capsys.readouterr().out
