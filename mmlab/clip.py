"""CLIP (Radford et al. 2021) with the real open_clip classes: the contrastive loss, a tiny trained model,
zero-shot classification by prompts, and the loader shared by the offline and pretrained paths.

The tiny model is ``open_clip.CLIP`` built from a custom config (``pretrained=None``), trained on
ShapesWorld by :func:`train_tiny_clip` and cached as safetensors in open_clip's own ``local-dir`` format,
so :func:`load_clip` loads it exactly as it loads a checkpoint from the hub.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from mmlab.data import ShapesWorld
from mmlab.runtime import device as runtime_device
from mmlab.runtime import save_state

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    """Both (B, D) float tensors of one shape, B >= 1, all finite: else a ValueError naming the argument."""
    for name, x in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor (B, D), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"{name} must be (B, D) with B >= 1, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    if image_features.shape != text_features.shape:
        raise ValueError(f"image_features and text_features must be (B, D) of one shape, got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE loss of CLIP (Radford et al. 2021, Fig. 3 pseudocode).

    Args:
        image_features: (B, D) L2-normalised image embeddings.
        text_features: (B, D) L2-normalised text embeddings; row i is the caption of image i.
        logit_scale: the inverse temperature 1/τ, already exponentiated (open_clip's ``model.logit_scale.exp()``).
    Returns:
        Scalar: mean of the image->text and text->image cross-entropies over the (B, B) similarity matrix.
    """
    _check_features(image_features, text_features)
    logits_per_image = logit_scale * image_features @ text_features.T  # (B, B)
    labels = torch.arange(image_features.shape[0], device=image_features.device)  # matching pairs on the diagonal
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): every (image, text) pair is its own binary problem.

    No softmax over the batch: the B diagonal pairs are positives (label +1), the B² − B others negatives (−1), each
    scored by ``logit_scale * cos + logit_bias`` (SigLIP initialises the scale at 10 and the bias at −10, so the
    many negatives start near a probability of 0). Summed over pairs, divided by B, as open_clip's ``SigLipLoss``.
    """
    _check_features(image_features, text_features)
    logits = logit_scale * image_features @ text_features.T + logit_bias  # (B, B)
    labels = 2 * torch.eye(len(logits), device=logits.device, dtype=logits.dtype) - 1  # +1 on the diagonal, −1 elsewhere
    return -F.logsigmoid(labels * logits).sum() / len(logits)


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


def grey(images: torch.Tensor) -> torch.Tensor:
    """Colour removed: each pixel's channel mean, repeated over the 3 channels ((N, 3, H, W) -> same shape)."""
    return images.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()


def silhouette(images: torch.Tensor) -> torch.Tensor:
    """Colour removed, shape kept: max - min over the channels, repeated over the 3 channels ((N, 3, H, W) -> same shape).

    Unlike :func:`grey` it does not turn a colour into a brightness that can match the background: ShapesWorld's
    background is grey (max - min ~ 0) and every colour of its palette is saturated (max - min 0.65-0.85), while
    green's channel mean (0.33) lies inside the background's range (0-0.35).
    """
    chroma = images.amax(1, keepdim=True) - images.amin(1, keepdim=True)  # (N, 1, H, W): ~0 where the pixel is grey
    return chroma.expand(-1, 3, -1, -1)


def flat_colour(images: torch.Tensor) -> torch.Tensor:
    """Shape removed: the mean colour of each quarter of the image, as 2 x 2 blocks ((N, 3, H, W) -> same shape)."""
    return F.interpolate(F.avg_pool2d(images, images.shape[-1] // 2), size=images.shape[-2:])


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


def zero_shot_classifier(model: open_clip.CLIP, tokenizer, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Zero-shot weights: each class's prompt embeddings averaged over templates (prompt ensembling).

    Args:
        classnames: C class names, e.g. ``["red circle", ...]``.
        templates: prompt templates with one ``{}``, e.g. ``["a {}.", "a photo of a {}."]``.
    Returns:
        (D, C) tensor of L2-normalised class embeddings (CLIP's ``zero_shot_classifier``).
    """
    if len(classnames) == 0:
        raise ValueError("classnames must hold at least one class name")
    if len(templates) == 0:
        raise ValueError("templates must hold at least one template")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"each template must contain exactly one '{{}}' for the class name, got {bad}")
    with torch.no_grad():
        weights = []
        for name in classnames:
            tokens = tokenizer([t.format(name) for t in templates])  # (T, L)
            _, feats = encode(model, texts=tokens)  # (T, D)
            mean = feats.mean(0)
            weights.append(mean / mean.norm())
    return torch.stack(weights, dim=1)  # (D, C)


def zero_shot_predict(model: open_clip.CLIP, images: torch.Tensor, classifier: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Class probabilities (N, C) of images (N, 3, H, W) in [0, 1] against a (D, C) zero-shot classifier."""
    if classifier.ndim != 2:
        raise ValueError(f"classifier must be (D, C), got shape {tuple(classifier.shape)}")
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            image_features, _ = encode(model, images=images[start:start + batch_size])  # (b, D)
            if image_features.shape[1] != classifier.shape[0]:
                raise ValueError(f"classifier has D={classifier.shape[0]} rows but the model embeds in D={image_features.shape[1]}")
            logits = model.logit_scale.exp() * image_features @ classifier.to(image_features)  # (b, C)
            out.append(logits.softmax(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, classifier.shape[1])


def compositional_logits(model: open_clip.CLIP, tokenizer, images: torch.Tensor, colors: Sequence[str],
                         shapes: Sequence[str], colour_view: Callable = flat_colour, shape_view: Callable = silhouette,
                         color_template: str = "a {} shape", shape_template: str = "a {}") -> torch.Tensor:
    """Zero-shot pair scores composed from attribute prompts: cos(colour view, "a red shape") + cos(shape view, "a triangle").

    Instead of embedding the unseen phrase "a red triangle" (a word pair the text tower never read together), each
    attribute is asked on its own, about a view of the image that shows only that attribute (the blurred copy keeps
    the colour, the silhouette the shape), and the two cosine similarities are added.

    Args:
        images: (N, 3, H, W) in [0, 1].
        colour_view, shape_view: (N, 3, H, W) -> (N, 3, H, W) maps in [0, 1]; ``lambda x: x`` asks the image itself.
    Returns:
        (N, len(colors) * len(shapes)) scores in (colour, shape) order: index = i_color * len(shapes) + i_shape.
    """
    _check_templates(color_template=color_template, shape_template=shape_template)
    with torch.no_grad():
        colour_image, colour_text = encode(model, colour_view(images), tokenizer([color_template.format(c) for c in colors]))
        shape_image, shape_text = encode(model, shape_view(images), tokenizer([shape_template.format(s) for s in shapes]))
    scores = (colour_image @ colour_text.T)[:, :, None] + (shape_image @ shape_text.T)[:, None, :]  # (N, C, S)
    return scores.flatten(1).cpu()  # (N, C*S)


def _check_templates(**templates: str) -> None:
    for name, tmpl in templates.items():
        if tmpl.count("{}") != 1:
            raise ValueError(f"{name} must contain exactly one '{{}}', got {tmpl!r}")


def pair_classnames(world: ShapesWorld) -> list[str]:
    """Class names ``"{color} {shape}"`` for every (colour, shape) pair of the world, in ``world.pairs`` order."""
    return [f"{c} {s}" for c, s in world.pairs]


def zero_shot_accuracy(model: open_clip.CLIP, tokenizer, world: ShapesWorld, n: int = 600, split: str = "heldout",
                       templates: Sequence[str] = ("a {}",), seed: int = 12345, composed: bool = False) -> float:
    """Zero-shot accuracy over *all* colour x shape class names on ``n`` images of ``split``.

    ``composed=False``: one prompt per pair ("a red triangle"); ``composed=True``: :func:`compositional_logits`
    (the colour asked about the blurred copy, the shape about the silhouette).
    """
    batch = world.sample(n, split, seed=seed)
    if composed:
        pred = compositional_logits(model, tokenizer, batch.images, world.colors, world.shapes).argmax(-1)
    else:
        classifier = zero_shot_classifier(model, tokenizer, pair_classnames(world), templates)
        pred = zero_shot_predict(model, batch.images, classifier).argmax(-1)
    target = torch.tensor([world.pairs.index(p) for p in zip(batch.colors, batch.shapes)])
    return (pred == target).float().mean().item()


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
    ``runtime.device()``; ``precision="fp16"`` halves the memory on CUDA.
    Returns ``(model, preprocess, tokenizer)``; ``preprocess`` is open_clip's PIL transform.
    """
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, precision=precision,
                                                                 device=device or runtime_device(), weights_only=True)
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)


# The training recipe lives in mmlab/clip_training.py (one concept per module). Its names are served from here too,
# lazily (PEP 562), so `mclip.tiny_clip(...)` works without a circular import at load time.
_TRAINING = ("MemoTokenizer", "TinyClipRecipe", "attribute_sub_batches", "clip_recipe", "tiny_clip", "tiny_clip_dir",
             "tiny_clip_trained", "train_tiny_clip")


def __getattr__(name: str):
    if name in _TRAINING:
        import mmlab.clip_training

        return getattr(mmlab.clip_training, name)
    raise AttributeError(f"module 'mmlab.clip' has no attribute {name!r}")
