"""Latent diffusion (Rombach et al. 2022, Stable Diffusion) at toy size with the real diffusers classes.

Builders for a tiny ``AutoencoderKL`` and a tiny text-conditioned ``UNet2DConditionModel``, and one loader,
:func:`load_components`, that reads the ``vae/``, ``unet/`` and ``scheduler/`` sub-folders of a Stable
Diffusion repository on the hub *or* of a folder written by :func:`save_components` — so the offline tests
exercise the loading code of the pretrained path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from mmlab.settings import device as runtime_device


def tiny_vae(seed: int = 0, latent_channels: int = 4, device: torch.device | None = None) -> AutoencoderKL:
    """An ``AutoencoderKL`` for 32x32 RGB images with downsampling factor 4 (latents 4x8x8; SD uses factor 8).

    Initialised from ``seed`` on the CPU (the same weights on every device), then moved to ``device``
    (default ``settings.device()``).
    """
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=32,
    ).to(device or runtime_device())


def tiny_text_unet(cross_attention_dim: int, seed: int = 0, sample_size: int = 8, in_channels: int = 4,
                   device: torch.device | None = None) -> UNet2DConditionModel:
    """A ``UNet2DConditionModel`` whose cross-attention reads text token states of width ``cross_attention_dim``.

    Initialised from ``seed`` on the CPU, then moved to ``device`` (default ``settings.device()``).
    """
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=cross_attention_dim,
        # diffusers' ``attention_head_dim`` is the number of heads in this class (a naming issue its source explains):
        # 2 heads, 16 wide at the 32-channel level and 32 in the middle; 8 heads took 1.3x as long a training step
        # (notebook 05's appendix)
        attention_head_dim=2, norm_num_groups=8,
    ).to(device or runtime_device())


def save_components(directory: str | Path, **components) -> Path:
    """``save_pretrained`` each component (e.g. ``vae=..., unet=..., scheduler=...``) into its own sub-folder
    as safetensors, the layout of a diffusers Stable Diffusion repository."""
    directory = Path(directory)
    for name, component in components.items():
        if not hasattr(component, "save_pretrained"):
            raise TypeError(f"component {name!r} has no save_pretrained (got {type(component).__name__})")
        if isinstance(component, torch.nn.Module):
            component.save_pretrained(directory / name, safe_serialization=True)
        else:
            component.save_pretrained(directory / name)
    return directory


def load_components(path_or_repo: str | Path, torch_dtype: torch.dtype = torch.float32, device: torch.device | None = None,
                    variant: str | None = None):
    """Load ``(vae, unet, scheduler)`` from a Stable Diffusion repository id or a local folder of the same layout.

    Weights are read as safetensors (``use_safetensors=True``); no remote code is run. ``variant="fp16"`` reads the
    half-size files (cast to ``torch_dtype``); ``device`` defaults to ``settings.device()``.
    """
    device = device or runtime_device()
    kw = {"torch_dtype": torch_dtype, "use_safetensors": True, "low_cpu_mem_usage": False, "variant": variant}
    vae = AutoencoderKL.from_pretrained(path_or_repo, subfolder="vae", **kw).to(device).eval()
    unet = UNet2DConditionModel.from_pretrained(path_or_repo, subfolder="unet", **kw).to(device).eval()
    scheduler = DDIMScheduler.from_pretrained(path_or_repo, subfolder="scheduler")
    return vae, unet, scheduler
