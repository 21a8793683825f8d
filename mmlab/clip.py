"""CLIP (Radford et al. 2021) with the real open_clip classes: the contrastive loss, a tiny trained model,
zero-shot classification by prompts, and the loader shared by the offline and pretrained paths.

The tiny model is ``open_clip.CLIP`` built from a custom config (``pretrained=None``), trained on
ShapesWorld by :func:`train_tiny_clip` and cached as safetensors in open_clip's own ``local-dir`` format,
so :func:`load_clip` loads it exactly as it loads a checkpoint from the hub.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from mmlab.cache import artefact_dir, cached
from mmlab.data import ShapesWorld
from mmlab.runtime import device as runtime_device
from mmlab.runtime import save_state
from mmlab.train import History, train, warmup_cosine

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
        logit_scale: the temperature, already exponentiated (open_clip's ``model.logit_scale.exp()``).
    Returns:
        Scalar: mean of the image->text and text->image cross-entropies over the (B, B) similarity matrix.
    """
    _check_features(image_features, text_features)
    logits_per_image = logit_scale * image_features @ text_features.T  # (B, B)
    labels = torch.arange(image_features.shape[0], device=image_features.device)  # matching pairs on the diagonal
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


@dataclass(frozen=True)
class TinyClipRecipe:
    """The recipe of the tiny CLIP of notebook 01: architecture, data and training.

    ``model_cfg`` uses open_clip's config schema (``embed_dim``, ``vision_cfg``, ``text_cfg``), so the
    same dict is written to ``open_clip_config.json`` and read back by ``open_clip.create_model``.
    Defaults: open_clip's ModifiedResNet image tower (width 16, one block per stage) and a 1-layer text
    transformer; ~1.3M image-tower parameters, 3.2M in the 49,408-row token embedding.
    """

    embed_dim: int = 64
    vision_cfg: dict = field(default_factory=lambda: {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16})
    text_cfg: dict = field(default_factory=lambda: {"context_length": 16, "width": 64, "heads": 4, "layers": 1, "mlp_ratio": 2.0})
    image_size: int = 32
    num_steps: int = 2600  # held-out generalisation arrives late: fewer steps leave some seeds under the bar
    lr: float = 3e-3
    weight_decay: float = 0.1
    cosine_decay: bool = True  # decay the learning rate to 0 along a cosine (after 5% linear warm-up)
    copies: int = 1  # sub-batches of one-image-per-training-caption per step (no duplicate captions)
    caption_templates: tuple[str, ...] = ("a {color} {shape}", "a {shape} that is {color}", "{color} {shape}",
                                          "the {shape} is {color}")  # one drawn per caption and step
    attribute_batches: bool = True  # add attribute-isolating sub-batches (see attribute_sub_batches())
    shape_batches: int = 4  # grey "a {shape}" sub-batches per step
    seed: int = 0

    @property
    def model_cfg(self) -> dict:
        return {"embed_dim": self.embed_dim, "vision_cfg": dict(self.vision_cfg), "text_cfg": dict(self.text_cfg)}




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


class MemoTokenizer:
    """A tokenizer that remembers each text's tokens: training re-tokenizes the same few dozen captions every
    step, and open_clip's tokenizer (ftfy + regex + BPE per text) cost ~3 ms of a ~45 ms step.

    Returns exactly what the wrapped tokenizer returns: ``(len(texts), context_length)`` int64 tokens.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._rows: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got one str")
        for text in texts:
            if text not in self._rows:
                self._rows[text] = self.tokenizer([text])[0]
        return torch.stack([self._rows[text] for text in texts])  # (N, L), a copy: callers may modify it


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
                         shapes: Sequence[str], color_template: str = "a {} shape", shape_template: str = "a {}",
                         grey_for_shape: bool = False) -> torch.Tensor:
    """Zero-shot pair scores composed from attribute prompts: sim(img, color prompt) + sim(img, shape prompt).

    Instead of embedding the unseen phrase "a red triangle" (a word pair the text tower never read together),
    each attribute is asked separately and the two cosine similarities are added.

    Args:
        images: (N, 3, H, W) in [0, 1].
        grey_for_shape: ask the shape prompt about the grey image (colour removed).
    Returns:
        (N, len(colors) * len(shapes)) scores in (colour, shape) order: index = i_color * len(shapes) + i_shape.
    """
    for name, tmpl in (("color_template", color_template), ("shape_template", shape_template)):
        if tmpl.count("{}") != 1:
            raise ValueError(f"{name} must contain exactly one '{{}}', got {tmpl!r}")
    with torch.no_grad():
        image_features, color_features = encode(model, images, tokenizer([color_template.format(c) for c in colors]))
        shape_images = grey(images) if grey_for_shape else None
        shape_image_features = image_features if shape_images is None else encode(model, shape_images)[0]
        _, shape_features = encode(model, texts=tokenizer([shape_template.format(s) for s in shapes]))
        color_sim = image_features @ color_features.T  # (N, C)
        shape_sim = shape_image_features @ shape_features.T  # (N, S)
    return (color_sim[:, :, None] + shape_sim[:, None, :]).flatten(1).cpu()  # (N, C*S)


def pair_classnames(world: ShapesWorld) -> list[str]:
    """Class names ``"{color} {shape}"`` for every (colour, shape) pair of the world, in ``world.pairs`` order."""
    return [f"{c} {s}" for c, s in world.pairs]


def zero_shot_accuracy(model: open_clip.CLIP, tokenizer, world: ShapesWorld, n: int = 600, split: str = "heldout",
                       templates: Sequence[str] = ("a {}",), seed: int = 12345, composed: bool = False,
                       grey_for_shape: bool = True) -> float:
    """Zero-shot accuracy over *all* colour x shape class names on ``n`` images of ``split``.

    ``composed=False``: one prompt per pair ("a red triangle"); ``composed=True``: :func:`compositional_logits`,
    the shape prompt asked about the grey copy of the image (``grey_for_shape``, as the model learnt shapes).
    """
    batch = world.sample(n, split, seed=seed)
    if composed:
        pred = compositional_logits(model, tokenizer, batch.images, world.colors, world.shapes,
                                    grey_for_shape=grey_for_shape).argmax(-1)
    else:
        classifier = zero_shot_classifier(model, tokenizer, pair_classnames(world), templates)
        pred = zero_shot_predict(model, batch.images, classifier).argmax(-1)
    target = torch.tensor([world.pairs.index(p) for p in zip(batch.colors, batch.shapes)])
    return (pred == target).float().mean().item()


def attribute_sub_batches(world: ShapesWorld, tokenizer, seed: int, shape_batches: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Attribute-isolating sub-batches: each names one attribute of images that show only that attribute.

    * ``shape_batches`` times: ``"a {shape}"`` under one *grey* image per shape (colour removed: the shape
      must be read from form, so shape features cannot lean on the colours each shape was seen with);
    * ``"a {color} shape"`` under one *blurred* image per colour (shape removed: a flat colour patch).
    Only training pairs are drawn, so no held-out (colour, shape) pair is ever seen.
    Returns a list of ``(images (n, 3, H, W), tokens (n, L))``, one caption per image, no duplicates.
    """
    g = torch.Generator().manual_seed(seed)
    pairs = world.train_pairs

    def pick(options: list) -> tuple[str, str]:
        return options[torch.randint(len(options), (1,), generator=g).item()]

    out = []
    shape_caps = tokenizer([f"a {s}" for s in world.shapes])
    for k in range(shape_batches):
        chosen = [pick([p for p in pairs if p[1] == s]) for s in world.shapes]
        images = world.sample(len(chosen), "train", seed=seed * 101 + k, pairs=chosen).images
        out.append((grey(images), shape_caps))
    chosen = [pick([p for p in pairs if p[0] == c]) for c in world.colors]
    images = world.sample(len(chosen), "train", seed=seed * 101 + 100, pairs=chosen).images
    out.append((flat_colour(images), tokenizer([f"a {c} shape" for c in world.colors])))
    return out


def train_tiny_clip(config: TinyClipRecipe = TinyClipRecipe(), progress: bool = True, eval_every: int = 250,
                    world: ShapesWorld | None = None, device: torch.device | None = None) -> tuple[open_clip.CLIP, History]:
    """Train the tiny CLIP contrastively on ShapesWorld ``train`` with the shared loop.

    Each batch holds every training caption ``config.copies`` times in separate sub-batches, so no batch has
    two images of one caption (duplicates would be false negatives for the contrastive loss).
    Trains on ``device`` (default ``runtime.device()``). Returns the trained model (eval mode) and its
    :class:`History` (evals ``heldout_acc``, ``heldout_acc_composed`` and ``seen_acc`` on 300 images each).
    """
    world = world or ShapesWorld(image_size=config.image_size, seed=0)
    model = build_clip(config.model_cfg, seed=config.seed).to(device or runtime_device())  # batches follow the model
    tokenizer = MemoTokenizer(tokenizer_for(config.model_cfg))  # the same captions every step: tokenize once
    pairs = world.train_pairs
    templates = config.caption_templates

    def batch_fn(step: int):
        seed = config.seed * 1_000_003 + step
        batch = world.sample(len(pairs) * config.copies, "train", seed=seed, pairs=pairs * config.copies)
        which = torch.randint(len(templates), (len(pairs),), generator=torch.Generator().manual_seed(seed))
        captions = tokenizer([templates[k].format(color=c, shape=s) for k, (c, s) in zip(which.tolist(), pairs)])
        if not config.attribute_batches:
            return batch.images, captions, []  # (copies*P, 3, H, W), (P, L): one of each caption
        return batch.images, captions, attribute_sub_batches(world, tokenizer, seed, shape_batches=config.shape_batches)

    def loss_fn(m: open_clip.CLIP, batch) -> torch.Tensor:
        images, captions, aux = batch
        # one forward pass per tower over every sub-batch, then one contrastive problem per sub-batch
        all_images = torch.cat([images] + [a for a, _ in aux])  # (copies*P + aux, 3, H, W)
        all_texts = torch.cat([captions] + [t for _, t in aux])  # (P + aux, L)
        image_features, text_features = encode(m, all_images, all_texts)
        image_sizes = [len(pairs)] * config.copies + [len(a) for a, _ in aux]
        text_sizes = [len(pairs)] + [len(t) for _, t in aux]
        image_chunks = image_features.split(image_sizes)
        text_chunks = text_features.split(text_sizes)
        text_chunks = [text_chunks[0]] * config.copies + list(text_chunks[1:])
        scale = m.logit_scale.exp()
        losses = [contrastive_loss(i, t, scale) for i, t in zip(image_chunks, text_chunks)]
        return torch.stack(losses).mean()

    def eval_fn(m: open_clip.CLIP) -> dict[str, float]:
        return {"heldout_acc": zero_shot_accuracy(m, tokenizer, world, n=300),
                "heldout_acc_composed": zero_shot_accuracy(m, tokenizer, world, n=300, composed=True),
                "seen_acc": zero_shot_accuracy(m, tokenizer, world, n=300, split="train")}

    # fused AdamW: one kernel over all parameters; 1.5x faster steps here, mostly the 3.2M-row token embedding
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scheduler = None
    if config.cosine_decay:
        scheduler = warmup_cosine(optimizer, config.num_steps, warmup=max(1, config.num_steps // 20))
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        history = train(model, batch_fn, loss_fn, optimizer, config.num_steps, eval_fn=eval_fn,
                        eval_every=eval_every, lr_scheduler=scheduler, progress=progress, desc="tiny CLIP")
    with torch.no_grad():
        model.logit_scale.clamp_(0, torch.log(torch.tensor(100.0)))
    return model.eval(), history


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


def clip_recipe(config: TinyClipRecipe) -> dict:
    """Everything that determines the tiny CLIP trained by ``config``: its cache key."""
    return {"recipe": asdict(config), "version": 3, "open_clip": open_clip.__version__, "torch": torch.__version__}


def tiny_clip_dir(config: TinyClipRecipe) -> Path:
    """Cache folder of the tiny CLIP trained by ``config`` (keyed by a hash of the recipe and library versions)."""
    return artefact_dir("tiny_clip", clip_recipe(config))


def tiny_clip_trained(config: TinyClipRecipe, progress: bool = True, eval_every: int = 250,
                      device: torch.device | None = None) -> tuple[open_clip.CLIP, History | None]:
    """Notebook 01's model and its training :class:`History`: trained on the page, or loaded whole from the cache.

    The history (losses, evaluations, seconds) is stored beside the weights, so a second run shows the same curves;
    it is None for a model that ``tiny_clip()`` trained and cached without one.
    """
    trained: dict[str, History] = {}

    def build() -> open_clip.CLIP:
        model, trained["history"] = train_tiny_clip(config, progress=progress, eval_every=eval_every, device=device)
        return model

    def save(model: open_clip.CLIP, folder: Path) -> None:
        save_clip(model, config.model_cfg, folder)
        (folder / "history.json").write_text(trained["history"].to_json())

    def load(folder: Path) -> tuple[open_clip.CLIP, History | None]:
        stored = folder / "history.json"  # absent in artefacts cached by tiny_clip(), which keeps no history
        history = trained.get("history") or (History.from_json(stored.read_text()) if stored.is_file() else None)
        return load_clip(f"local-dir:{folder}", device=device)[0], history

    return cached("tiny_clip", clip_recipe(config), build, save, load)


def tiny_clip(seed: int = 0, retrain: bool = False, progress: bool = True, device: torch.device | None = None):
    """The trained tiny CLIP of notebook 01: loaded from the cache, or trained (same recipe, same seed) on ``device``.

    Returns ``(model, preprocess, tokenizer)`` through :func:`load_clip`, exactly as a hub checkpoint.
    """
    config = TinyClipRecipe(seed=seed)
    return cached("tiny_clip", clip_recipe(config), build=lambda: train_tiny_clip(config, progress=progress, device=device)[0],
                  save=lambda m, folder: save_clip(m, config.model_cfg, folder),
                  load=lambda folder: load_clip(f"local-dir:{folder}", device=device), retrain=retrain)


