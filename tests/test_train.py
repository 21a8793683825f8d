import math

import pytest
import torch

from mmlab.train import BatchStore, History, count_parameters, train, warmup_cosine


def _fit(seed):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    w_true = torch.tensor([[1.0, -2.0, 0.5]])

    def batch_fn(step):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(32, 3, generator=g)
        return x, x @ w_true.T

    def loss_fn(m, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(m(x), y)

    def eval_fn(m):
        return {"w_err": (m.weight - w_true).abs().max()}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = train(model, batch_fn, loss_fn, opt, num_steps=150, eval_fn=eval_fn, eval_every=50, progress=False)
    return model, hist


def test_train_learns_and_records():
    model, hist = _fit(0)
    assert isinstance(hist, History)
    assert hist.steps == list(range(150)) and len(hist.losses) == 150
    assert [s for s, _ in hist.evals] == [50, 100, 150]
    assert hist.losses[-1] < 1e-3 < hist.losses[0]
    steps, errs = hist.metric("w_err")
    assert steps == [50, 100, 150] and errs[-1] < 1e-2
    assert hist.seconds > 0 and not model.training


def test_train_is_deterministic():
    (m1, h1), (m2, h2) = _fit(1), _fit(1)
    assert h1.losses == h2.losses and torch.equal(m1.weight, m2.weight)


def test_bad_arguments():
    m = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        train(m, lambda s: None, lambda m, b: m.weight.sum(), opt, num_steps=0)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        train(m, lambda s: None, lambda m, b: m.weight, opt, num_steps=1, progress=False)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train(m, lambda s: None, lambda m, b: m.weight.sum() * float("nan"), opt, num_steps=1, progress=False)
    with pytest.raises(KeyError, match="no evaluation recorded metric"):
        History().metric("acc")


def test_warmup_cosine_schedule():
    from mmlab.train import warmup_cosine

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = warmup_cosine(opt, num_steps=100, warmup=10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert abs(lrs[0] - 0.1) < 1e-9 and abs(lrs[9] - 0.5 * (1 + math.cos(math.pi * 0.09))) < 1e-9  # warm-up
    assert max(lrs) <= 1.0 and lrs[-1] < 0.001  # decays to ~0
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone after warm-up
    with pytest.raises(ValueError, match="num_steps"):
        warmup_cosine(opt, 0)
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(opt, 10, warmup=0)


def test_count_parameters_of_a_module_and_of_some_tensors():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    net[0].requires_grad_(False)
    assert count_parameters(net) == 3 * 4 + 4 + 4 * 2 + 2
    assert count_parameters(p for p in net.parameters() if p.requires_grad) == 4 * 2 + 2


def test_batch_store_makes_each_batch_once_and_reads_back_the_same_bytes(tmp_path):
    calls = []

    def batch_fn(step):
        calls.append(step)
        g = torch.Generator().manual_seed(step)
        return {"x": torch.randn(4, 3, generator=g), "ids": torch.randint(10, (4,), generator=g)}

    store = BatchStore(batch_fn)
    first = [store(s) for s in range(3)]
    again = [store(s) for s in range(3)]
    assert calls == [0, 1, 2] and (store.made, store.read) == (3, 3)
    for a, b in zip(first, again):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert not list(store.directory.glob(".*.tmp"))               # written whole: no temporary file left behind
    folder = store.directory
    del store
    assert not folder.exists()                                     # its temporary folder goes with it
    kept = BatchStore(batch_fn, directory=tmp_path)
    kept(5)
    assert (tmp_path / "5.safetensors").is_file()
    with pytest.raises(TypeError, match="dict of tensors"):
        BatchStore(lambda step: (torch.zeros(1),), directory=tmp_path)(0)


def test_two_trainings_on_a_batch_store_match_fresh_batches():
    def batch_fn(step):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(16, 3, generator=g)
        return {"x": x, "y": x.sum(1, keepdim=True)}

    def fit(fn):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        train(model, fn, lambda m, b: torch.nn.functional.mse_loss(m(b["x"]), b["y"]),
              torch.optim.Adam(model.parameters(), lr=1e-2), 30, progress=False)
        return model

    store = BatchStore(batch_fn)
    fresh, made, read = fit(batch_fn), fit(store), fit(store)
    assert store.read == 30
    for m in (made, read):
        assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), m.parameters()))


@pytest.mark.parametrize("cls, kwargs", [(torch.optim.Adam, {"lr": 3e-3}), (torch.optim.AdamW, {"lr": 3e-3}),
                                         (torch.optim.AdamW, {"lr": 2e-3, "weight_decay": 0.0}),
                                         (torch.optim.AdamW, {"lr": 3e-3, "weight_decay": 0.1})])
def test_foreach_adam_is_the_same_update_as_the_per_tensor_loop(cls, kwargs):
    # The notebooks build Adam/AdamW with foreach=True for speed: on the CPU it must change no number.
    models = []
    for foreach in (None, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(2, 8), torch.nn.SiLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(8 * 6 * 6, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
        model[5].weight.requires_grad_(False)                    # a frozen parameter in the list
        opt = cls(model.parameters(), foreach=foreach, **kwargs)
        sched = warmup_cosine(opt, 60, warmup=5)
        g = torch.Generator().manual_seed(1)
        for _ in range(60):
            x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(4, (8,), generator=g)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
        models.append(model)
    assert all(torch.equal(a, b) for a, b in zip(*(m.parameters() for m in models)))
