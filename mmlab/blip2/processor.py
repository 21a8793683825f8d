"""The data side of the tiny BLIP-2: a word-level tokenizer, ``Blip2Processor``, captions and LM inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    Blip2Processor,
    BlipImageProcessor,
    PreTrainedTokenizerFast,
)

from mmlab.clip import OPENAI_MEAN, OPENAI_STD, flat_colour, grey
from mmlab.data import ShapesWorld

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<image>", "<unk>", "<dec>")
PAD, BOS, EOS, IMAGE, UNK, DEC = range(len(SPECIAL_TOKENS))


# ----------------------------------------------------------------------------------------------------------------
# tokenizer and processor


def caption_words(world: ShapesWorld) -> list[str]:
    """Every word of the captions the tiny model reads and writes: ``a``, ``shape``, the colours and the shapes."""
    return ["a", "shape", *world.colors, *world.shapes]


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A word-level ``PreTrainedTokenizerFast`` (built with ``tokenizers``, nothing downloaded).

    Ids: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<image>`` 3, ``<unk>`` 4, ``<dec>`` 5, then ``words``.
    Encoding adds ``<s>`` before and ``</s>`` after the text, as OPT's tokenizer adds its BOS.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = list(words)
    if len(set(words)) != len(words) or any(w in SPECIAL_TOKENS or not w.strip() for w in words):
        raise ValueError(f"words must be distinct, non-empty and not special tokens, got {words}")
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", BOS), ("</s>", EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", additional_special_tokens=["<image>", "<dec>"], padding_side="right")


def build_processor(tokenizer: PreTrainedTokenizerFast, image_size: int, num_query_tokens: int) -> Blip2Processor:
    """``Blip2Processor`` = ``BlipImageProcessor`` (resize + CLIP mean/std) + the tokenizer, expanding K image tokens."""
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size}, image_mean=list(OPENAI_MEAN),
                                         image_std=list(OPENAI_STD), do_convert_rgb=False)
    return Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=num_query_tokens)


def pixel_values(processor: Blip2Processor, images: torch.Tensor) -> torch.Tensor:
    """Images as ShapesWorld makes them, (N, 3, H, W) floats in [0, 1], through the processor: (N, 3, S, S)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a float tensor (N, 3, H, W) in [0, 1], got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point() or (images.numel() and (images.min() < 0 or images.max() > 1)):
        raise ValueError("images must be floats in [0, 1] (as ShapesWorld makes them)")
    if len(images) == 0:
        raise ValueError("images is empty")
    out = processor.image_processor(list(images), do_rescale=False, return_tensors="pt", input_data_format="channels_first")
    return out["pixel_values"]


# ----------------------------------------------------------------------------------------------------------------
# data: captions, attribute-only captions, LM inputs


def attribute_captions(colors: Sequence[str], shapes: Sequence[str], kinds: Sequence[str]) -> list[str]:
    """Captions by kind: ``"full"`` -> ``"a red circle"``, ``"shape"`` -> ``"a circle"``, ``"color"`` -> ``"a red shape"``."""
    out = []
    for c, s, k in zip(colors, shapes, kinds, strict=True):
        if k not in ("full", "shape", "color"):
            raise ValueError(f"kinds must be 'full', 'shape' or 'color', got {k!r}")
        out.append(f"a {c} {s}" if k == "full" else f"a {s}" if k == "shape" else f"a {c} shape")
    return out


def caption_batch(world: ShapesWorld, n: int, seed: int, attribute_batches: bool = True, split: str = "train",
                  shape_fraction: float = 0.25, color_fraction: float = 0.125):
    """Images and target captions for captioning: ``n`` ShapesWorld images with their captions, plus (optionally)
    ``n * shape_fraction`` grey images captioned ``"a {shape}"`` and ``n * color_fraction`` flat-colour images
    captioned ``"a {color} shape"``.

    Returns ``(images (N, 3, H, W) in [0, 1], captions: list[str])``. Only ``split``'s pairs are drawn.
    """
    batch = world.sample(n, split, seed=seed)
    images, captions = [batch.images], list(batch.captions)
    if attribute_batches:
        shapes_b = world.sample(int(n * shape_fraction), split, seed=seed + 7_919)
        images.append(grey(shapes_b.images))
        captions += attribute_captions(shapes_b.colors, shapes_b.shapes, ["shape"] * len(shapes_b))
        colors_b = world.sample(int(n * color_fraction), split, seed=seed + 15_485)
        images.append(flat_colour(colors_b.images))
        captions += attribute_captions(colors_b.colors, colors_b.shapes, ["color"] * len(colors_b))
    return torch.cat(images), captions


def lm_inputs(tokenizer: PreTrainedTokenizerFast, captions: Sequence[str], num_query_tokens: int) -> dict[str, torch.Tensor]:
    """``input_ids`` = K ``<image>`` tokens + ``<s> caption </s>`` (padded), ``attention_mask``, and ``labels``
    (the ids, -100 on image tokens, ``<s>`` and padding: only the caption and ``</s>`` are predicted). All (N, K + L)."""
    text = tokenizer(list(captions), padding=True, return_tensors="pt")
    ids = text["input_ids"]  # (N, L)
    n = len(ids)
    image_ids = torch.full((n, num_query_tokens), IMAGE, dtype=torch.long)
    input_ids = torch.cat([image_ids, ids], 1)  # (N, K + L)
    attention_mask = torch.cat([torch.ones_like(image_ids), text["attention_mask"]], 1)
    labels = input_ids.masked_fill((input_ids == IMAGE) | (input_ids == PAD) | (input_ids == BOS), -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


