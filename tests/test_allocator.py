"""The kernels' memory allocator: what ``mmlab.tools.allocator`` decides, that the kernels get it, and that it changes no
figure (a seeded training in a child process gives bit-identical weights under TCMalloc and the system's malloc)."""

import json
import subprocess
import sys

import nbformat
import pytest

from mmlab.tools import allocator, cli

TCMALLOC = allocator.find_tcmalloc()
needs_tcmalloc = pytest.mark.skipif(TCMALLOC is None, reason=f"TCMalloc not installed ({allocator.INSTALL_HINT})")


def test_bad_choice_names_the_variable():
    with pytest.raises(ValueError, match="MMLAB_ALLOCATOR must be one of tcmalloc, system"):
        allocator.resolve({"MMLAB_ALLOCATOR": "mimalloc"})


def test_system_choice_and_an_existing_preload_add_nothing():
    assert allocator.preload_env({"MMLAB_ALLOCATOR": "system"}) == {}
    assert allocator.resolve({"MMLAB_ALLOCATOR": "system"})[0] is None
    colab = {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"}  # what Colab sets
    assert allocator.preload_env(colab) == {} and "already preloaded" in allocator.resolve(colab)[1]
    assert allocator.name_of(colab["LD_PRELOAD"]) == "tcmalloc" and allocator.name_of("") == "system"
    assert allocator.name_of("libjemalloc.so.2") == "jemalloc"


def test_missing_tcmalloc_falls_back_unless_insisted_on(monkeypatch):
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    library, why = allocator.resolve({})
    assert library is None and "system's malloc" in why
    assert allocator.preload_env({}) == {}
    with pytest.raises(RuntimeError, match="MMLAB_ALLOCATOR=tcmalloc, but no libtcmalloc_minimal is installed"):
        allocator.resolve({"MMLAB_ALLOCATOR": "tcmalloc"})


@needs_tcmalloc
def test_found_tcmalloc_is_preloaded_before_existing_entries():
    assert allocator.preload_env({}) == {"LD_PRELOAD": TCMALLOC}
    assert allocator.preload_env({"LD_PRELOAD": "libfoo.so"}) == {"LD_PRELOAD": f"{TCMALLOC} libfoo.so"}
    assert allocator.preload_env({"MMLAB_ALLOCATOR": "TCMalloc"}) == {"LD_PRELOAD": TCMALLOC}


TRAIN = """
import hashlib, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.GroupNorm(4, 16), torch.nn.SiLU(),
                            torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 10))
opt = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=True)
g = torch.Generator().manual_seed(1)
for _ in range(20):
    x, y = torch.randn(64, 3, 8, 8, generator=g), torch.randint(10, (64,), generator=g)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
maps = open("/proc/self/maps").read()
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest(), "tcmalloc" in maps)
"""


@needs_tcmalloc
def test_tcmalloc_is_loaded_and_changes_no_weight():
    def run(env):
        out = subprocess.run([sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, check=True).stdout
        digest, loaded = out.split()
        return digest, loaded == "True"

    base = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    system = run(base)
    tcmalloc = run({**base, **allocator.preload_env({})})
    assert not system[1] and tcmalloc[1]  # the preload took effect, and only where asked for
    assert tcmalloc[0] == system[0]       # the same weights, bit for bit


def test_run_gives_the_kernels_the_allocator_and_records_it(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from mmlab import claims\n"
                                          "claims.measure('tcmalloc', 'tcmalloc' in open('/proc/self/maps').read())")]
    nbformat.write(nb, folder / "01_maps.ipynb")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    for choice, expected in (("system", 0.0), ("", 1.0 if TCMALLOC else 0.0)):
        monkeypatch.setenv("MMLAB_ALLOCATOR", choice)
        build = tmp_path / f"book-{choice or 'default'}"
        assert cli.main(["run", "--dir", str(folder), "--build", str(build), "--no-progress"]) == 0
        (record,) = json.loads((build / "summary.json").read_text())
        assert record["report"]["measured"] == {"tcmalloc": expected}
        assert record["allocator"] == ("tcmalloc" if expected else "system")
    assert "kernels' memory allocator: the system's malloc (MMLAB_ALLOCATOR=system)" in capsys.readouterr().out
    monkeypatch.setenv("MMLAB_ALLOCATOR", "bogus")
    with pytest.raises(SystemExit, match="MMLAB_ALLOCATOR must be one of"):
        cli.main(["run", "--dir", str(folder), "--build", str(tmp_path / "b"), "--no-progress"])
