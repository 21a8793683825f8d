"""What each pretrained checkpoint costs, said before it is downloaded, and whether it fits the machine.

The one table of the pretrained path (opt-in: see ``mmlab.settings.pretrained_decision``). The README's
"Pretrained models" section and ``mmlab doctor`` print the same rows. Sizes are the checkpoint files the loading
code reads (hub file listings, rounded up) and the memory they take once loaded; each notebook cell calls
:func:`announce` first and skips, with one line, what does not fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

ANY_DEVICE = "MMLAB_PRETRAINED_ANY_DEVICE"


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of the pretrained path."""

    notebook: str
    name: str  # what the loading code is given
    download_gb: float  # files fetched on first use (then cached by the hub client)
    memory: str  # what it takes once loaded, in words
    min_gpu_gb: float | None  # None: also runs on a CPU; else the CUDA memory it needs (it is skipped without it)


CHECKPOINTS: dict[str, Checkpoint] = {
    "clip": Checkpoint("01", "open_clip ViT-B-32, pretrained='laion2b_s34b_b79k'", 0.61,
                       "~0.6 GB in fp32 (CPU) or ~0.3 GB in fp16 (CUDA)", None),
    "blip2": Checkpoint("02", "Salesforce/blip2-opt-2.7b", 15.5,
                        "7.2 GB of fp16 weights: needs a CUDA GPU with >= 10 GB (fp32 on a CPU would need ~15.5 GB of RAM)",
                        10.0),
    "sd": Checkpoint("05", "stable-diffusion-v1-5/stable-diffusion-v1-5, variant='fp16'", 2.8,
                     "~2.6 GB in fp16 (CUDA); the CPU path loads only the VAE and UNet (~3.5 GB in fp32) and generates nothing",
                     None),
}


def gpu_memory_gb(device: torch.device) -> float | None:
    """Total memory of a CUDA device in GB, or None for other devices."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / 1e9


def any_device() -> bool:
    """``MMLAB_PRETRAINED_ANY_DEVICE=1``: run the lines that need a CUDA GPU today on any device.

    For a hub mirror that serves *tiny* checkpoints under the real repository ids (the rehearsal of
    ``mmlab.tools.rehearsal``): 02's BLIP-2 branch and 05's pipeline and image then run on a CPU in float32. With the
    real checkpoints it would ask a laptop for ~15 GB of RAM and minutes per image: leave it unset there.
    """
    return os.environ.get(ANY_DEVICE, "").strip().lower() in {"1", "true", "yes", "on"}


def generates(device: torch.device) -> bool:
    """Whether 05 runs Stable Diffusion's whole pipeline and draws an image: on CUDA, or with :func:`any_device`.
    Elsewhere it loads only the VAE and UNet (a 50-step image takes minutes on a CPU)."""
    return device.type == "cuda" or any_device()


def fits(key: str, device: torch.device) -> tuple[bool, str]:
    """Whether checkpoint ``key`` can run on ``device``, and why not in one line when it cannot."""
    if key not in CHECKPOINTS:
        raise ValueError(f"key must be one of {sorted(CHECKPOINTS)}, got {key!r}")
    ckpt = CHECKPOINTS[key]
    if ckpt.min_gpu_gb is None or any_device():
        return True, ""
    memory = gpu_memory_gb(device)
    if memory is None:
        return False, f"skipped {ckpt.name}: it needs a CUDA GPU with >= {ckpt.min_gpu_gb:g} GB; this device is {device.type}"
    if memory < ckpt.min_gpu_gb:
        return False, f"skipped {ckpt.name}: it needs >= {ckpt.min_gpu_gb:g} GB of GPU memory; this GPU has {memory:.1f} GB"
    return True, ""


def announce(key: str, device: torch.device) -> bool:
    """Print the checkpoint, its download size and the memory it needs; return whether it fits ``device``."""
    ok, why = fits(key, device)
    ckpt = CHECKPOINTS[key]
    print(f"pretrained: {ckpt.name} — downloads ~{ckpt.download_gb:g} GB once; {ckpt.memory}")
    if not ok:
        print(why)
    elif ckpt.min_gpu_gb is not None and gpu_memory_gb(device) is None:
        print(f"{ANY_DEVICE}=1: running it on {device.type} anyway (meant for a hub mirror's tiny checkpoints)")
    return ok


def half_on_cuda(device: torch.device) -> torch.dtype:
    """float16 on CUDA (half the memory and download-to-GPU traffic), float32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def table() -> str:
    """The checkpoints as a Markdown table (the README's section and ``mmlab doctor`` print it)."""
    rows = ["| notebook | checkpoint | download | memory | GPU needed |", "|---|---|---|---|---|"]
    for c in CHECKPOINTS.values():
        gpu = f">= {c.min_gpu_gb:g} GB CUDA" if c.min_gpu_gb else "no (faster with one)"
        rows.append(f"| {c.notebook} | `{c.name}` | ~{c.download_gb:g} GB | {c.memory} | {gpu} |")
    return "\n".join(rows)
