"""Zero-shot classification with CLIP: class prompts embedded by the text tower, images scored by cosine similarity.

:func:`zero_shot_classifier` is CLIP's recipe (one prompt per class, templates averaged: prompt ensembling);
:func:`compositional_logits` is the toy-only composed read of notebook 01 (each attribute asked about its own view).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import open_clip
import torch

from mmlab.clip.model import encode
from mmlab.clip.views import flat_colour, silhouette
from mmlab.data import ShapesWorld


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
