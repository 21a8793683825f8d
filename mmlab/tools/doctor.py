"""``mmlab doctor`` and ``mmlab cache``: what this machine has, what the notebooks would decide, what is cached."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
import sys

PACKAGES = ("torch", "torchvision", "transformers", "open_clip_torch", "diffusers", "shap", "numpy", "scikit-learn",
            "nbclient", "ipykernel", "safetensors", "filelock")
PRETRAINED_EXTRAS = ("accelerate",)  # the `pretrained` extra: faster loading of the large checkpoints


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "MISSING"


def doctor() -> int:
    """Print one screen about this machine; exit 1 when a package the notebooks need is missing."""
    import torch

    from mmlab import cache, pretrained, settings
    from mmlab.tools import allocator

    print(f"python {sys.version.split()[0]} on {platform.system()} {platform.machine()}")
    missing = [p for p in PACKAGES if version(p) == "MISSING"]
    print("packages: " + ", ".join(f"{p} {version(p)}" for p in PACKAGES))
    dev = settings.device()
    memory = pretrained.gpu_memory_gb(dev)  # None unless CUDA
    gpu = "" if memory is None else f" ({torch.cuda.get_device_name(dev)}, {memory:.1f} GB)"
    print(f"device: {dev}{gpu}; torch threads {settings.set_threads()} (MMLAB_THREADS overrides); seed {settings.seed()}")
    try:
        print(f"memory allocator of the notebook kernels: {allocator.resolve()[1]}")
    except (ValueError, RuntimeError) as exc:
        print(f"memory allocator of the notebook kernels: {exc}")
    folder = cache.cache_dir()
    entries = cache.entries()
    usage = shutil.disk_usage(folder)
    print(f"cache: {folder} — {len(entries)} artefacts, {sum(e[1] for e in entries) / 1e6:.0f} MB; "
          f"{usage.free / 1e9:.0f} GB free (MMLAB_CACHE overrides; `mmlab cache --clear` empties it)")
    hub = settings.hub_url()
    answers = settings.online(hub, timeout=2.5)
    print(f"hub: {hub} {'answers' if answers else 'does not answer (within 2.5 s, or HF_HUB_OFFLINE is set)'}")
    ok, why = settings.pretrained_decision(timeout=2.5)
    print(f"pretrained path (use_pretrained): {'taken' if ok else 'not taken'} — {why}")
    extras = [p for p in PRETRAINED_EXTRAS if importlib.util.find_spec(p) is None]
    print("for the pretrained path: " + ("all installed" if not extras else
                                         f"missing {', '.join(extras)} (pip install -e '.[pretrained]')"))
    for key in pretrained.CHECKPOINTS:
        fits, reason = pretrained.fits(key, dev)
        c = pretrained.CHECKPOINTS[key]
        print(f"  {c.notebook} {c.name}: ~{c.download_gb:g} GB download; " + ("fits this machine" if fits else reason))
    if missing:
        print(f"MISSING packages: {', '.join(missing)} — pip install -e '.[dev]'")
    return 1 if missing else 0


def cache_command(clear: bool) -> int:
    """List the cached artefacts with their sizes; with ``clear``, delete them."""
    from mmlab import cache

    entries = cache.entries()
    for path, size, _ in entries:
        print(f"{size / 1e6:8.1f} MB  {path.name}")
    print(f"{len(entries)} artefacts, {sum(e[1] for e in entries) / 1e6:.1f} MB in {cache.cache_dir()}")
    if clear:
        for path, _, _ in entries:
            shutil.rmtree(path, ignore_errors=True)
        print(f"cleared {len(entries)} artefacts")
    return 0
