"""BLIP-2 (Li et al. 2023) at tiny size with the real transformers classes.

A frozen image encoder (the tiny CLIP of notebook 01) and a frozen decoder-only language model (a tiny OPT)
are bridged by a Q-Former (``transformers.Blip2QFormerModel``) and K learnable queries:

* stage 1 (:class:`QFormerPretrainer`) trains the queries and the Q-Former with ITC, ITM and ITG under the
  three attention masks of :func:`stage1_masks` (the transformers classes have no stage-1 model, so it is built
  here around the real ``Blip2QFormerModel``, whose layers already route query and text tokens);
* stage 2 trains queries, Q-Former and ``language_projection`` inside ``Blip2ForConditionalGeneration`` with the
  language-modelling loss: the K projected query outputs are soft visual prompts for the frozen LM.

:func:`tiny_blip2` builds (or loads from the cache) the trained model and its ``Blip2Processor``;
:func:`load_blip2` is the one loader for the tiny saved model and ``Salesforce/blip2-opt-2.7b``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
import transformers
from open_clip.modified_resnet import ModifiedResNet
from torch import nn
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    Blip2VisionConfig,
    BlipImageProcessor,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from mmlab.clip import OPENAI_MEAN, OPENAI_STD, flat_colour, grey
from mmlab.data import ShapesWorld
from mmlab.runtime import cache_dir, recipe_key
from mmlab.train import History, train, warmup_cosine

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
# the frozen image encoder: the tiny CLIP's ModifiedResNet, returning a feature map as tokens


VIEWS = ("rgb", "grey", "blur")


def image_views(pixel_values: torch.Tensor, views: Sequence[str], mean: Sequence[float] = OPENAI_MEAN,
                std: Sequence[float] = OPENAI_STD) -> list[torch.Tensor]:
    """Fixed, parameter-free views of normalised images (N, 3, S, S), each returned normalised the same way.

    ``"rgb"``: the image; ``"grey"``: its luminance (channel mean of the un-normalised pixels; colour removed);
    ``"blur"``: the mean colour of each quarter of the image (shape removed). Same sizes as the input.
    """
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {list(views)}")
    m = torch.tensor(mean, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 3, 1, 1)
    out = []
    for view in views:
        if view == "rgb":
            out.append(pixel_values)
        elif view == "grey":
            luminance = (pixel_values * s + m).mean(1, keepdim=True)  # (N, 1, S, S) in [0, 1]
            out.append((luminance - m) / s)
        else:
            out.append(flat_colour(pixel_values))  # 2 x 2 blocks: averaging commutes with the per-channel normalisation
    return out


class ClipImageTower(nn.Module):
    """open_clip's ``ModifiedResNet`` cut after stage ``stage``: its feature maps as image tokens for the Q-Former.

    At 32 px the final stage is 1 x 1 (the ResNet downsamples 32x), so the Q-Former cross-attends to an earlier,
    spatial stage: stage 2 gives 4 x 4 = 16 tokens of 8 * width channels per view. With several ``views``
    (see :func:`image_views`) the tokens of each view are concatenated: ``("grey", "blur")`` hands the Q-Former
    one colour-free and one shape-free set of tokens of the same frozen encoder. Returns what ``Blip2VisionModel``
    returns (``BaseModelOutputWithPooling``, ``last_hidden_state`` (N, V*G*G, C)), so ``Blip2ForConditionalGeneration``
    uses it unchanged.
    """

    def __init__(self, vision_cfg: dict, embed_dim: int, stage: int = 2, views: Sequence[str] = ("rgb",)) -> None:
        super().__init__()
        if stage not in (1, 2, 3, 4):
            raise ValueError(f"stage must be 1, 2, 3 or 4, got {stage}")
        image_views(torch.zeros(1, 3, 2, 2), views)  # validates views
        self.stage = stage
        self.views = tuple(views)
        width = vision_cfg["width"]
        self.resnet = ModifiedResNet(layers=vision_cfg["layers"], output_dim=embed_dim, heads=width * 32 // 64,
                                     image_size=vision_cfg["image_size"], width=width)
        self.hidden_size = width * 4 * 2 ** (stage - 1)  # bottleneck expansion 4, channels double per stage

    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Feature-map tokens (N, G*G, C) of one view (normalised pixels (N, 3, S, S))."""
        x = self.resnet.stem(pixel_values.to(self.resnet.conv1.weight.dtype))  # (N, w, S/4, S/4)
        for layer in (self.resnet.layer1, self.resnet.layer2, self.resnet.layer3, self.resnet.layer4)[: self.stage]:
            x = layer(x)  # (N, C, G, G)
        return x.flatten(2).transpose(1, 2)  # (N, G*G, C)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, return_dict: bool = True,
                **kwargs) -> BaseModelOutputWithPooling:
        tokens = torch.cat([self.tokens(v) for v in image_views(pixel_values, self.views)], 1)  # (N, V*G*G, C)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens.mean(1))


class TinyBlip2ForConditionalGeneration(Blip2ForConditionalGeneration):
    """``Blip2ForConditionalGeneration`` whose image encoder is a :class:`ClipImageTower` (a CNN, not BLIP-2's ViT).

    Everything else (queries, Q-Former, projection, OPT, ``forward``, ``generate``, ``save_pretrained``,
    ``from_pretrained``) is the transformers class; the tower's open_clip config is stored in ``config.clip_vision``.
    """

    def __init__(self, config: Blip2Config) -> None:
        super().__init__(config)
        spec = config.clip_vision
        self.vision_model = ClipImageTower(spec["vision_cfg"], spec["embed_dim"], spec["stage"], spec["views"])


def load_blip2(name_or_path: str | Path, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """Load a BLIP-2 model and processor: ``"Salesforce/blip2-opt-2.7b"`` on the pretrained path, or a folder written
    by :func:`save_blip2`. Safetensors only; the class comes from the config (no remote code).
    """
    config = Blip2Config.from_pretrained(name_or_path)
    cls = TinyBlip2ForConditionalGeneration if getattr(config, "clip_vision", None) else Blip2ForConditionalGeneration
    model = cls.from_pretrained(name_or_path, dtype=dtype, use_safetensors=True).to(device).eval()
    processor = Blip2Processor.from_pretrained(name_or_path)
    return model, processor


def save_blip2(model: Blip2ForConditionalGeneration, processor: Blip2Processor, directory: str | Path) -> Path:
    """``save_pretrained`` of model (safetensors) and processor into ``directory``."""
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)
    return directory


# ----------------------------------------------------------------------------------------------------------------
# the recipe


@dataclass(frozen=True)
class TinyBlip2Config:
    """The recipe of the tiny BLIP-2: sizes of the Q-Former and the LM, and the three trainings.

    The image encoder is the tiny CLIP of notebook 01 (``mmlab.clip.tiny_clip``), cut after ``feature_stage``.
    """

    image_size: int = 32
    feature_stage: int = 2  # CLIP ResNet stage the Q-Former cross-attends to (4 x 4 x 128 at 32 px)
    views: tuple[str, ...] = ("grey", "blur")  # colour-free + shape-free views of the frozen encoder (see image_views)
    num_query_tokens: int = 8  # K learnable queries (BLIP-2: 32)
    qformer_hidden: int = 64  # (BLIP-2: 768, BERT-base)
    qformer_layers: int = 2
    qformer_heads: int = 4
    embed_dim: int = 32  # ITC embedding size (BLIP-2: 256)
    lm_hidden: int = 64
    lm_layers: int = 2
    lm_heads: int = 4
    lm_steps: int = 500  # text-only pretraining of the LM ("read the prefix")
    lm_lr: float = 3e-3
    stage1_steps: int = 300
    stage1_lr: float = 2e-3
    stage2_steps: int = 300
    stage2_lr: float = 2e-3
    batch_size: int = 72
    attribute_batches: bool = True  # grey images -> "a {shape}", flat colour -> "a {color} shape" (as notebook 01)
    shape_fraction: float = 0.25  # grey images per captioned image
    color_fraction: float = 0.125  # flat-colour images per captioned image
    weight_decay: float = 0.0
    seed: int = 0


def lm_config(config: TinyBlip2Config, vocab_size: int) -> OPTConfig:
    """A tiny OPT (decoder-only, pre-LayerNorm, learned positions) with our special-token ids."""
    return OPTConfig(vocab_size=vocab_size, hidden_size=config.lm_hidden, num_hidden_layers=config.lm_layers,
                     ffn_dim=4 * config.lm_hidden, num_attention_heads=config.lm_heads, word_embed_proj_dim=config.lm_hidden,
                     max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, pad_token_id=PAD, bos_token_id=BOS,
                     eos_token_id=EOS)


def qformer_config(config: TinyBlip2Config, encoder_hidden_size: int, vocab_size: int) -> Blip2QFormerConfig:
    """A tiny Q-Former (BERT-style; cross-attention to the image every layer; text FFN for stage 1)."""
    return Blip2QFormerConfig(vocab_size=vocab_size, hidden_size=config.qformer_hidden, num_hidden_layers=config.qformer_layers,
                              num_attention_heads=config.qformer_heads, intermediate_size=4 * config.qformer_hidden,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=32,
                              cross_attention_frequency=1, encoder_hidden_size=encoder_hidden_size, use_qformer_text_input=True,
                              pad_token_id=PAD)


def build_blip2(config: TinyBlip2Config, clip_model: open_clip.CLIP, clip_cfg: dict, language_model: OPTForCausalLM,
                tokenizer: PreTrainedTokenizerFast) -> TinyBlip2ForConditionalGeneration:
    """Assemble the tiny BLIP-2: CLIP tower weights and LM weights carried in, queries initialised N(0, 0.02).

    ``clip_cfg`` is the open_clip ``model_cfg`` of ``clip_model`` (``TinyClipConfig().model_cfg``).
    Freezes the image encoder and the LM (``requires_grad=False``, eval mode); queries, Q-Former and projection train.
    """
    vision_cfg, embed_dim = clip_cfg["vision_cfg"], clip_cfg["embed_dim"]  # open_clip's model_cfg of the tiny CLIP
    tower = ClipImageTower(vision_cfg, embed_dim, config.feature_stage, config.views)
    enc = tower.hidden_size
    blip_config = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=enc, intermediate_size=enc, num_hidden_layers=0, num_attention_heads=1,
                                        image_size=config.image_size, patch_size=config.image_size),
        qformer_config=qformer_config(config, enc, len(tokenizer)).to_dict(),
        text_config=language_model.config.to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_token_index=IMAGE,
    )
    blip_config.clip_vision = {"vision_cfg": vision_cfg, "embed_dim": embed_dim, "stage": config.feature_stage,
                               "views": list(config.views)}
    torch.manual_seed(config.seed)
    model = TinyBlip2ForConditionalGeneration(blip_config)
    model.vision_model.resnet.load_state_dict(clip_model.visual.state_dict())
    model.language_model.load_state_dict(language_model.state_dict())
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 0.02)  # transformers zero-inits them (weights come from a checkpoint there)
    for module in (model.vision_model, model.language_model):
        module.requires_grad_(False)
    return model.eval()


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


# ----------------------------------------------------------------------------------------------------------------
# the frozen LM, pretrained on text only to read its prefix


def read_prefix_batch(world: ShapesWorld, tokenizer: PreTrainedTokenizerFast, n: int, num_query_tokens: int,
                      hidden_size: int, seed: int, attribute_batches: bool = True) -> dict[str, torch.Tensor]:
    """A text-only batch that teaches the LM to read its first K positions.

    Each of the K prefix slots holds either a word (the caption's colour word and/or shape word, at random slots)
    or noise; the LM must write ``<s> a {color} {shape} </s>`` (or ``a {shape}`` / ``a {color} shape`` when only that
    word is in the prefix). Any colour-shape combination is drawn, as a real LLM has read every phrase; no image
    is involved. Returns :func:`lm_inputs` plus ``prefix_ids`` (N, K): the word in each slot, or -1 for noise, and
    ``noise`` (N, K, hidden_size): unit Gaussian vectors for the noise slots (scaled to the embeddings by the caller).
    """
    g = torch.Generator().manual_seed(seed)
    ci = torch.randint(len(world.colors), (n,), generator=g)
    si = torch.randint(len(world.shapes), (n,), generator=g)
    kinds = ["full"] * n
    if attribute_batches:
        kinds = [("full", "full", "shape", "color")[k] for k in torch.randint(4, (n,), generator=g).tolist()]
    colors, shapes = [world.colors[i] for i in ci], [world.shapes[i] for i in si]
    batch = lm_inputs(tokenizer, attribute_captions(colors, shapes, kinds), num_query_tokens)
    prefix_ids = torch.full((n, num_query_tokens), -1, dtype=torch.long)
    slots = torch.rand(n, num_query_tokens, generator=g).argsort(1)[:, :2]  # two distinct random slots per row
    color_ids = torch.tensor(tokenizer.convert_tokens_to_ids(colors))
    shape_ids = torch.tensor(tokenizer.convert_tokens_to_ids(shapes))
    rows = torch.arange(n)
    has_color = torch.tensor([k in ("full", "color") for k in kinds])
    has_shape = torch.tensor([k in ("full", "shape") for k in kinds])
    prefix_ids[rows[has_color], slots[has_color, 0]] = color_ids[has_color]
    prefix_ids[rows[has_shape], slots[has_shape, 1]] = shape_ids[has_shape]
    batch["prefix_ids"] = prefix_ids
    batch["noise"] = torch.randn(n, num_query_tokens, hidden_size, generator=g)
    return batch


def prefix_embeds(lm: OPTForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``inputs_embeds`` (N, K + L, H) of a :func:`read_prefix_batch`: word embeddings in the word slots, noise at the
    embeddings' scale in the other prefix slots, then the embedded ``<s> caption </s>``."""
    embed = lm.get_input_embeddings()
    k = batch["prefix_ids"].shape[1]
    inputs_embeds = embed(batch["input_ids"])  # (N, K + L, H)
    words = embed(batch["prefix_ids"].clamp(min=0))  # (N, K, H)
    noise = batch["noise"] * embed.weight.detach().std()
    prefix = torch.where((batch["prefix_ids"] >= 0)[..., None], words, noise)
    return torch.cat([prefix, inputs_embeds[:, k:]], 1)


def pretrain_lm(config: TinyBlip2Config, tokenizer: PreTrainedTokenizerFast, world: ShapesWorld,
                progress: bool = True) -> tuple[OPTForCausalLM, History]:
    """Train the tiny OPT from scratch on :func:`read_prefix_batch` text (language-modelling loss on the caption).

    Returns the LM (eval mode) and its :class:`History` (eval ``read_em``: exact match of greedy captions written
    from a prefix holding the two words, on 256 fresh batches' rows).
    """
    torch.manual_seed(config.seed)
    lm = OPTForCausalLM(lm_config(config, len(tokenizer)))
    k, h = config.num_query_tokens, config.lm_hidden

    def batch_fn(step: int):
        return read_prefix_batch(world, tokenizer, 2 * config.batch_size, k, h, seed=config.seed * 1_000_003 + step,
                                 attribute_batches=config.attribute_batches)

    def loss_fn(m: OPTForCausalLM, batch) -> torch.Tensor:
        return m(inputs_embeds=prefix_embeds(m, batch), attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    def eval_fn(m: OPTForCausalLM) -> dict[str, float]:
        batch = read_prefix_batch(world, tokenizer, 256, k, h, seed=-1 - config.seed, attribute_batches=False)
        embeds = prefix_embeds(m, batch)[:, : k + 1]  # prefix + <s>
        out = m.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                         max_new_tokens=4, do_sample=False, pad_token_id=PAD)
        written = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
        target = [t.strip() for t in tokenizer.batch_decode(batch["input_ids"][:, k:], skip_special_tokens=True)]
        return {"read_em": sum(a == b for a, b in zip(written, target)) / len(target)}

    optimizer = torch.optim.AdamW(lm.parameters(), lr=config.lm_lr, weight_decay=0.0)
    history = train(lm, batch_fn, loss_fn, optimizer, config.lm_steps, eval_fn=eval_fn, eval_every=max(1, config.lm_steps // 4),
                    progress=progress, desc="LM: read the prefix")
    return lm.eval(), history


# ----------------------------------------------------------------------------------------------------------------
# stage 2: generative learning through the frozen LM, and captioning


def trainable_parameters(model: Blip2ForConditionalGeneration) -> list[nn.Parameter]:
    """The parameters BLIP-2 trains in stage 2: ``query_tokens``, the Q-Former and ``language_projection``."""
    return [model.query_tokens, *model.qformer.parameters(), *model.language_projection.parameters()]


def caption(model: Blip2ForConditionalGeneration, processor: Blip2Processor, images: torch.Tensor,
            max_new_tokens: int = 6, batch_size: int = 256) -> list[str]:
    """Greedy captions of ``images`` ((N, 3, H, W) floats in [0, 1], as ShapesWorld makes them).

    ``generate(pixel_values=...)`` builds the prefix (K image tokens + ``<s>``) itself; returns N stripped strings.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    pixels = pixel_values(processor, images)  # checks images
    device = next(model.parameters()).device
    dtype = model.language_projection.weight.dtype
    out = []
    with torch.no_grad():
        for chunk in pixels.split(batch_size):
            ids = model.generate(pixel_values=chunk.to(device, dtype), max_new_tokens=max_new_tokens, do_sample=False)
            out += [t.strip() for t in processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return out


def exact_match(predicted: Sequence[str], captions: Sequence[str]) -> float:
    """Fraction of predicted captions equal to the reference caption (after stripping spaces)."""
    if len(predicted) != len(captions) or not captions:
        raise ValueError(f"need as many predictions as captions (> 0), got {len(predicted)} and {len(captions)}")
    return sum(p.strip() == c.strip() for p, c in zip(predicted, captions)) / len(captions)


def train_stage2(model: Blip2ForConditionalGeneration, processor: Blip2Processor, world: ShapesWorld,
                 config: TinyBlip2Config, progress: bool = True, eval_every: int = 100, eval_n: int = 240) -> History:
    """Stage 2: the LM loss of ``Blip2ForConditionalGeneration`` on :func:`caption_batch`, training only
    :func:`trainable_parameters` (the image encoder and the LM stay frozen).

    Returns the :class:`History` with evals ``em_seen`` and ``em_heldout`` (exact match of greedy captions).
    """
    k = model.config.num_query_tokens
    tokenizer = processor.tokenizer

    def batch_fn(step: int):
        images, captions = caption_batch(world, config.batch_size, seed=config.seed * 1_000_003 + step,
                                         attribute_batches=config.attribute_batches, shape_fraction=config.shape_fraction,
                                         color_fraction=config.color_fraction)
        return {"pixel_values": pixel_values(processor, images), **lm_inputs(tokenizer, captions, k)}

    def loss_fn(m: Blip2ForConditionalGeneration, batch) -> torch.Tensor:
        m.vision_model.eval(), m.language_model.eval()  # frozen parts: BatchNorm statistics stay fixed
        return m(**batch).loss

    seen = world.sample(eval_n, "train", seed=10_000 + config.seed)
    heldout = world.sample(eval_n, "heldout", seed=20_000 + config.seed)

    def eval_fn(m: Blip2ForConditionalGeneration) -> dict[str, float]:
        return {"em_seen": exact_match(caption(m, processor, seen.images), seen.captions),
                "em_heldout": exact_match(caption(m, processor, heldout.images), heldout.captions)}

    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=config.stage2_lr, weight_decay=config.weight_decay)
    scheduler = warmup_cosine(optimizer, config.stage2_steps, warmup=20)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return train(model, batch_fn, loss_fn, optimizer, config.stage2_steps, eval_fn=eval_fn, eval_every=eval_every,
                     lr_scheduler=scheduler, progress=progress, desc="stage 2: Q-Former -> frozen LM")


# ----------------------------------------------------------------------------------------------------------------
# stage 1: representation learning with ITC, ITM and ITG around the real Blip2QFormerModel


def stage1_masks(num_query_tokens: int, text_attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three self-attention masks of BLIP-2 stage 1 (Li et al. 2023, Fig. 2 right), over [K queries; L text].

    Args:
        num_query_tokens: K.
        text_attention_mask: (N, L) 1 for real text tokens, 0 for padding.
    Returns:
        ``{"itc": ..., "itm": ..., "itg": ...}``, each a bool tensor (N, K + L, K + L); ``[n, i, j]`` is True when
        token i may attend to token j. ITC: uni-modal (queries and text do not see each other); ITM: bi-directional
        (all see all); ITG: multi-modal causal (queries see queries only; text sees all queries and earlier text).
        Padding columns are always False.
    """
    if text_attention_mask.ndim != 2:
        raise ValueError(f"text_attention_mask must be (N, L), got shape {tuple(text_attention_mask.shape)}")
    if num_query_tokens < 1:
        raise ValueError(f"num_query_tokens must be >= 1, got {num_query_tokens}")
    n, length = text_attention_mask.shape
    k = num_query_tokens
    size = k + length
    is_query = torch.arange(size) < k  # (S,)
    same_modality = is_query[:, None] == is_query[None, :]  # (S, S)
    causal_text = torch.ones(length, length).tril().bool()
    itg = torch.zeros(size, size, dtype=torch.bool)
    itg[:k, :k] = True  # queries see queries
    itg[k:, :k] = True  # text sees every query
    itg[k:, k:] = causal_text  # and earlier text
    keep = torch.cat([torch.ones(n, k, dtype=torch.bool), text_attention_mask.bool()], 1)[:, None, :]  # (N, 1, S)
    masks = {"itc": same_modality, "itm": torch.ones(size, size, dtype=torch.bool), "itg": itg}
    return {name: m[None] & keep for name, m in masks.items()}


class QFormerPretrainer(nn.Module):
    """BLIP-2 stage 1: learnable queries + ``Blip2QFormerModel`` + its text branch, trained with ITC, ITM and ITG.

    One Q-Former serves both branches: query tokens cross-attend to the frozen image tokens, text tokens do not;
    which tokens see which is set by :func:`stage1_masks`. Heads: ``vision_proj``/``text_proj`` (ITC),
    ``itm_head`` (ITM, 2-way), ``lm_head`` tied to the word embeddings (ITG). After training, ``query_tokens`` and
    ``qformer`` are carried into ``Blip2ForConditionalGeneration`` (:func:`carry_stage1`).
    """

    def __init__(self, qformer_config: Blip2QFormerConfig, num_query_tokens: int, embed_dim: int) -> None:
        super().__init__()
        h = qformer_config.hidden_size
        self.num_query_tokens = num_query_tokens
        self.query_tokens = nn.Parameter(torch.randn(1, num_query_tokens, h) * 0.02)
        self.qformer = Blip2QFormerModel(qformer_config)
        self.embeddings = Blip2TextEmbeddings(qformer_config)
        for table in (self.embeddings.word_embeddings, self.embeddings.position_embeddings):
            nn.init.normal_(table.weight, std=qformer_config.initializer_range)  # BERT's init (nn.Embedding's is N(0, 1))
        self.vision_proj = nn.Linear(h, embed_dim)
        self.text_proj = nn.Linear(h, embed_dim)
        self.itm_head = nn.Linear(h, 2)
        self.lm_head = nn.Linear(h, qformer_config.vocab_size, bias=False)
        self.lm_head.weight = self.embeddings.word_embeddings.weight
        self.temp = nn.Parameter(torch.tensor(0.07))

    def run(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Q-Former outputs (N, K + L, H) of [queries; text] under a (N, K + L, K + L) bool ``mask``."""
        queries = self.query_tokens.expand(len(input_ids), -1, -1)  # (N, K, H)
        embeds = self.embeddings(input_ids=input_ids, query_embeds=queries)  # (N, K + L, H)
        additive = torch.zeros(mask.shape, dtype=embeds.dtype).masked_fill(~mask, torch.finfo(embeds.dtype).min)
        return self.qformer(query_embeds=embeds, query_length=self.num_query_tokens, attention_mask=additive[:, None],
                            encoder_hidden_states=image_embeds).last_hidden_state

    def forward(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                caption_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three stage-1 losses.

        Args:
            image_embeds: (N, T, C) frozen image-encoder tokens.
            input_ids, attention_mask: (N, L) ``<s> caption </s>`` (``<s>`` plays BERT's [CLS]).
            caption_ids: (N,) an id per distinct caption: equal captions are positives of each other in ITC and
                never ITM negatives (the batch may repeat a caption).
        Returns:
            ``{"loss", "itc", "itm", "itg"}``; ``loss`` is their sum.
        """
        k = self.num_query_tokens
        masks = stage1_masks(k, attention_mask)
        same = caption_ids[:, None] == caption_ids[None, :]  # (N, N) positives
        # ITC: uni-modal mask; similarity = max over queries of query-text cosine
        out = self.run(image_embeds, input_ids, masks["itc"])  # (N, K + L, H)
        image_feats = F.normalize(self.vision_proj(out[:, :k]), dim=-1)  # (N, K, E)
        text_feat = F.normalize(self.text_proj(out[:, k]), dim=-1)  # (N, E), the [CLS] (<s>) token
        sim = torch.einsum("ike,je->ijk", image_feats, text_feat).amax(-1) / self.temp.clamp(0.01, 0.5)  # (N, N)
        targets = same.float() / same.sum(1, keepdim=True)
        itc = (F.cross_entropy(sim, targets) + F.cross_entropy(sim.T, targets)) / 2
        # ITM: bi-directional mask; one positive, one hard negative text per image, one hard negative image per text
        with torch.no_grad():
            weights = sim.softmax(1).masked_fill(same, 0) + (~same).float() * 1e-6  # (N, N) never a positive
            neg_text = torch.multinomial(weights, 1).squeeze(1)  # (N,)
            neg_image = torch.multinomial(weights.T, 1).squeeze(1)
        itm_images = torch.cat([image_embeds, image_embeds, image_embeds[neg_image]])
        itm_ids = torch.cat([input_ids, input_ids[neg_text], input_ids])
        itm_mask = torch.cat([attention_mask, attention_mask[neg_text], attention_mask])
        out = self.run(itm_images, itm_ids, stage1_masks(k, itm_mask)["itm"])
        itm_logits = self.itm_head(out[:, :k]).mean(1)  # (3N, 2): averaged over the queries, as BLIP-2
        itm_labels = torch.cat([torch.ones(len(input_ids)), torch.zeros(2 * len(input_ids))]).long()
        itm = F.cross_entropy(itm_logits, itm_labels)
        # ITG: multi-modal causal mask; <dec> replaces <s>; text generated from the queries only
        dec_ids = input_ids.clone()
        dec_ids[:, 0] = DEC
        out = self.run(image_embeds, dec_ids, masks["itg"])
        logits = self.lm_head(out[:, k:-1])  # (N, L - 1, V): token t predicts t + 1
        labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
        itg = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        return {"loss": itc + itm + itg, "itc": itc, "itm": itm, "itg": itg}


def carry_stage1(pretrainer: QFormerPretrainer, model: Blip2ForConditionalGeneration) -> None:
    """Copy the stage-1 ``query_tokens`` and Q-Former weights into the stage-2 model (same config, same names)."""
    with torch.no_grad():
        model.query_tokens.copy_(pretrainer.query_tokens)
    model.qformer.load_state_dict(pretrainer.qformer.state_dict())


def train_stage1(model: Blip2ForConditionalGeneration, processor: Blip2Processor, world: ShapesWorld,
                 config: TinyBlip2Config, progress: bool = True) -> tuple[QFormerPretrainer, History]:
    """Stage 1: ITC + ITM + ITG on :func:`caption_batch` with ``model``'s frozen image encoder.

    Returns the trained :class:`QFormerPretrainer` and its :class:`History`; carry it over with :func:`carry_stage1`.
    """
    torch.manual_seed(config.seed)
    pretrainer = QFormerPretrainer(model.config.qformer_config, model.config.num_query_tokens, config.embed_dim)
    tokenizer = processor.tokenizer
    tower = model.vision_model

    def batch_fn(step: int):
        images, captions = caption_batch(world, config.batch_size, seed=config.seed * 1_000_003 + 500_000 + step,
                                         attribute_batches=config.attribute_batches, shape_fraction=config.shape_fraction,
                                         color_fraction=config.color_fraction)
        with torch.no_grad():
            image_embeds = tower(pixel_values(processor, images)).last_hidden_state  # (N, T, C), frozen
        text = tokenizer(captions, padding=True, return_tensors="pt")
        distinct = {c: i for i, c in enumerate(dict.fromkeys(captions))}
        return image_embeds, text["input_ids"], text["attention_mask"], torch.tensor([distinct[c] for c in captions])

    def loss_fn(m: QFormerPretrainer, batch) -> torch.Tensor:
        return m(*batch)["loss"]

    optimizer = torch.optim.AdamW(pretrainer.parameters(), lr=config.stage1_lr, weight_decay=config.weight_decay)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        history = train(pretrainer, batch_fn, loss_fn, optimizer, config.stage1_steps,
                        lr_scheduler=warmup_cosine(optimizer, config.stage1_steps, warmup=20), progress=progress,
                        desc="stage 1: ITC + ITM + ITG")
    return pretrainer.eval(), history


# ----------------------------------------------------------------------------------------------------------------
# the ablation: every image token straight into the LM (no Q-Former), as LLaVA-style linear connectors do


class PatchPrefixCaptioner(nn.Module):
    """The frozen encoder's T image tokens, linearly projected, as the LM's prefix: no queries, no Q-Former.

    The alternative BLIP-2 avoids: the prefix is T tokens long (T = 32 here; 257 for ViT-L/14) instead of K.
    """

    def __init__(self, vision_model: nn.Module, language_model: OPTForCausalLM, encoder_hidden_size: int) -> None:
        super().__init__()
        self.vision_model, self.language_model = vision_model, language_model
        self.projection = nn.Linear(encoder_hidden_size, language_model.config.hidden_size)

    def prefix(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, T, H_lm) soft prompt of the images."""
        with torch.no_grad():
            tokens = self.vision_model(pixel_values).last_hidden_state  # (N, T, C), frozen
        return self.projection(tokens)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        """LM loss of ``<s> caption </s>`` after the T-token prefix (``input_ids`` etc. without image tokens)."""
        prefix = self.prefix(pixel_values)
        embeds = torch.cat([prefix, self.language_model.get_input_embeddings()(input_ids)], 1)
        mask = torch.cat([torch.ones(prefix.shape[:2], dtype=attention_mask.dtype), attention_mask], 1)
        labels = torch.cat([torch.full(prefix.shape[:2], -100, dtype=labels.dtype), labels], 1)
        return self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def caption(self, processor: Blip2Processor, images: torch.Tensor, max_new_tokens: int = 6) -> list[str]:
        """Greedy captions of (N, 3, H, W) images in [0, 1]."""
        prefix = self.prefix(pixel_values(processor, images))
        bos = self.language_model.get_input_embeddings()(torch.full((len(prefix), 1), BOS))
        embeds = torch.cat([prefix, bos], 1)
        ids = self.language_model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                           max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=PAD)
        return [t.strip() for t in processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def train_patch_prefix(captioner: PatchPrefixCaptioner, processor: Blip2Processor, world: ShapesWorld,
                       config: TinyBlip2Config, progress: bool = True, eval_every: int = 100, eval_n: int = 240) -> History:
    """Train only ``captioner.projection`` with the stage-2 recipe (same batches, steps, schedule and evals)."""
    tokenizer = processor.tokenizer

    def batch_fn(step: int):
        images, captions = caption_batch(world, config.batch_size, seed=config.seed * 1_000_003 + step,
                                         attribute_batches=config.attribute_batches, shape_fraction=config.shape_fraction,
                                         color_fraction=config.color_fraction)
        text = lm_inputs(tokenizer, captions, 0)
        return pixel_values(processor, images), text["input_ids"], text["attention_mask"], text["labels"]

    def loss_fn(m: PatchPrefixCaptioner, batch) -> torch.Tensor:
        m.vision_model.eval(), m.language_model.eval()
        return m(*batch)

    seen = world.sample(eval_n, "train", seed=10_000 + config.seed)
    heldout = world.sample(eval_n, "heldout", seed=20_000 + config.seed)

    def eval_fn(m: PatchPrefixCaptioner) -> dict[str, float]:
        return {"em_seen": exact_match(m.caption(processor, seen.images), seen.captions),
                "em_heldout": exact_match(m.caption(processor, heldout.images), heldout.captions)}

    optimizer = torch.optim.AdamW(captioner.projection.parameters(), lr=config.stage2_lr, weight_decay=config.weight_decay)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return train(captioner, batch_fn, loss_fn, optimizer, config.stage2_steps, eval_fn=eval_fn, eval_every=eval_every,
                     lr_scheduler=warmup_cosine(optimizer, config.stage2_steps, warmup=20), progress=progress,
                     desc="ablation: all image tokens -> LM")


# ----------------------------------------------------------------------------------------------------------------
# cached recipe and public entry point


def _recipe(config: TinyBlip2Config, part: str) -> dict:
    """Everything that determines a cached artefact of the tiny BLIP-2 (its cache key)."""
    return {"part": part, "recipe": asdict(config), "version": 1, "transformers": transformers.__version__,
            "torch": torch.__version__, "clip": tiny_clip_folder().name}  # the CLIP recipe hash, not the machine path


def tiny_clip_folder() -> Path:
    """Cache folder of notebook 01's tiny CLIP (the frozen image encoder; its name carries the CLIP recipe's hash)."""
    from mmlab.clip import TinyClipConfig, tiny_clip_dir

    return tiny_clip_dir(TinyClipConfig())


def tiny_language_model(config: TinyBlip2Config = TinyBlip2Config(), retrain: bool = False,
                        progress: bool = True) -> tuple[OPTForCausalLM, PreTrainedTokenizerFast]:
    """The frozen LM of the tiny BLIP-2: :func:`pretrain_lm` once, then ``OPTForCausalLM.from_pretrained`` (safetensors)
    from the cache. Returns ``(lm, tokenizer)``."""
    world = ShapesWorld(image_size=config.image_size, seed=0)
    tokenizer = build_tokenizer(caption_words(world))
    lm_fields = {k: v for k, v in asdict(config).items() if k.startswith("lm_") or k in ("num_query_tokens", "batch_size",
                                                                                          "attribute_batches", "seed")}
    directory = cache_dir() / f"tiny_opt-{recipe_key({'lm': lm_fields, 'version': 1, 'torch': torch.__version__})}"
    if retrain or not (directory / "model.safetensors").is_file():
        lm, _ = pretrain_lm(config, tokenizer, world, progress=progress)
        lm.save_pretrained(directory, safe_serialization=True)
    try:
        lm = OPTForCausalLM.from_pretrained(directory, use_safetensors=True)
    except Exception as exc:  # noqa: BLE001 - a broken cache entry is rebuilt, loudly
        print(f"mmlab cache: {directory.name} unreadable ({type(exc).__name__}: {exc}); retraining")
        return tiny_language_model(config, retrain=True, progress=progress)
    return lm.eval(), tokenizer


def tiny_blip2(seed: int = 0, retrain: bool = False, progress: bool = True) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """The trained tiny BLIP-2 of notebook 02: loaded from the cache, or built with the notebook's recipe
    (frozen tiny CLIP + frozen pretrained tiny OPT; stage 1 then stage 2) and saved with :func:`save_blip2`.

    Returns ``(model, processor)`` through :func:`load_blip2`, exactly as ``Salesforce/blip2-opt-2.7b`` loads.
    """
    from mmlab.clip import TinyClipConfig, tiny_clip

    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    config = TinyBlip2Config(seed=seed)
    directory = cache_dir() / f"tiny_blip2-{recipe_key(_recipe(config, 'blip2'))}"
    if not retrain and (directory / "model.safetensors").is_file():
        try:
            return load_blip2(directory)
        except Exception as exc:  # noqa: BLE001
            print(f"mmlab cache: {directory.name} unreadable ({type(exc).__name__}: {exc}); retraining")
    world = ShapesWorld(image_size=config.image_size, seed=0)
    clip_model, _, _ = tiny_clip(progress=progress)
    lm, tokenizer = tiny_language_model(config, progress=progress)
    processor = build_processor(tokenizer, config.image_size, config.num_query_tokens)
    model = build_blip2(config, clip_model, TinyClipConfig().model_cfg, lm, tokenizer)
    pretrainer, _ = train_stage1(model, processor, world, config, progress=progress)
    carry_stage1(pretrainer, model)
    train_stage2(model, processor, world, config, progress=progress)
    save_blip2(model, processor, directory)
    return load_blip2(directory)
