"""The real ``open_clip.CLIP`` at any size: build it, tokenize for it, encode images and texts, save and load it.

:func:`load_clip` serves both paths: a hub checkpoint (``("ViT-B-32", "laion2b_s34b_b79k")``) and the tiny model
saved by :func:`save_clip` in open_clip's own ``local-dir`` format, so the offline tests exercise the real loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from mmlab.files import save_state
from mmlab.settings import device as runtime_device

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def build_clip(model_cfg: dict, seed: int = 0) -> open_clip.CLIP:
    """A randomly initialised ``open_clip.CLIP`` from an open_clip config dict (seeded, CPU, float32)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(**model_cfg)
    model.visual.preprocess_cfg = {"size": model_cfg["vision_cfg"]["image_size"], "mean": OPENAI_MEAN, "std": OPENAI_STD}
    return model.eval()


def tokenizer_for(model_cfg: dict) -> open_clip.tokenizer.SimpleTokenizer:
    """open_clip's BPE tokenizer (its vocabulary ships with the package) at the model's context length."""
    return open_clip.tokenizer.SimpleTokenizer(context_length=model_cfg["text_cfg"].get("context_length", 77))


def preprocess_tensors(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Resize (N, 3, H, W) images in [0, 1] to the model's input size and normalise with its mean/std."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a tensor (N, 3, H, W), got {getattr(images, 'shape', type(images))}")
    if images.numel() and not torch.isfinite(images).all():
        raise ValueError("images holds NaN or infinite values")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must lie in [0, 1], got values in [{images.min():.3g}, {images.max():.3g}]")
    cfg = getattr(model.visual, "preprocess_cfg", {})
    size = cfg.get("size", model.visual.image_size)
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if tuple(images.shape[-2:]) != size:
        images = F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    mean = torch.tensor(cfg.get("mean", OPENAI_MEAN), dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_STD), dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def encode(model: open_clip.CLIP, images: torch.Tensor | None = None, texts: torch.Tensor | None = None):
    """Normalised ``image_features`` (N, D) of [0, 1] images and/or ``text_features`` (M, D) of token ids."""
    dev = next(model.parameters()).device
    image_features = None if images is None else model.encode_image(preprocess_tensors(model, images.to(dev)), normalize=True)
    text_features = None if texts is None else model.encode_text(texts.to(dev), normalize=True)
    return image_features, text_features


def text_token_states(model: open_clip.CLIP, texts: torch.Tensor) -> torch.Tensor:
    """Per-token outputs (B, L, width) of the text tower before pooling: the context a diffusion UNet cross-attends to.

    The same steps as ``open_clip.CLIP.encode_text`` up to ``ln_final`` (Stable Diffusion likewise uses the last
    hidden states of CLIP's text encoder, 77 x 768, not the pooled embedding).
    """
    if texts.ndim != 2:
        raise ValueError(f"texts must be token ids (B, L), got shape {tuple(texts.shape)}")
    texts = texts.to(model.token_embedding.weight.device)
    x = model.token_embedding(texts) + model.positional_embedding  # (B, L, width)
    x = model.transformer(x, attn_mask=model.attn_mask)
    return model.ln_final(x)


def save_clip(model: open_clip.CLIP, model_cfg: dict, directory: str | Path) -> Path:
    """Save in open_clip's ``local-dir`` format: ``open_clip_config.json`` + ``open_clip_model.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = getattr(model.visual, "preprocess_cfg", {})
    preprocess = {"mean": list(cfg.get("mean", OPENAI_MEAN)), "std": list(cfg.get("std", OPENAI_STD))}
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=1))
    save_state(directory / "open_clip_model.safetensors", model.state_dict())
    return directory


def load_clip(model_name: str, pretrained: str | None = None, device: torch.device | None = None,
              precision: str = "fp32"):
    """Load a CLIP with open_clip: ``("ViT-B-32", "laion2b_s34b_b79k")``, ``"hf-hub:org/name"`` or ``"local-dir:PATH"``.

    The same function serves the pretrained path (hub checkpoints) and the offline path (the tiny model saved
    by :func:`save_clip`), so the offline tests exercise the real loading code. ``device`` defaults to
    ``settings.device()``; ``precision="fp16"`` halves the memory on CUDA.
    Returns ``(model, preprocess, tokenizer)``; ``preprocess`` is open_clip's PIL transform.
    """
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, precision=precision,
                                                                 device=device or runtime_device(), weights_only=True)
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)
