"""BLIP-2 stage 2: generative learning through the frozen LM, and the all-image-tokens connector it is compared with."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    Blip2ForConditionalGeneration,
    Blip2Processor,
    OPTForCausalLM,
)

from mmlab.blip2.model import ClipImageTower, caption, exact_match, trainable_parameters
from mmlab.blip2.processor import BOS, PAD, caption_batch, lm_inputs, pixel_values
from mmlab.blip2.recipe import TinyBlip2Recipe
from mmlab.data import ShapesWorld
from mmlab.train import BatchStore, History, train, warmup_cosine


def _images_and_captions(world: ShapesWorld, config: TinyBlip2Recipe, step: int) -> tuple[torch.Tensor, list[str]]:
    """The images (N, 3, H, W) and captions of stage-2 batch ``step`` (every stage-2-length training draws these)."""
    return caption_batch(world, config.batch_size, seed=config.seed * 1_000_003 + step,
                         attribute_batches=config.attribute_batches, shape_fraction=config.shape_fraction,
                         color_fraction=config.color_fraction)


class Stage2Batches(BatchStore):
    """Stage 2's batches with the frozen encoder's tokens, made once for every training that sees them.

    Notebook 02 trains four models on the same stage-2 batches through the same frozen tower (stage 2 with and
    without stage 1, and the two per-token connectors), so a batch's image tokens are the same floats each time:
    the first training runs the encoder and writes them (:class:`~mmlab.train.BatchStore`), the later ones read
    them back. Batch ``step`` is ``{"pixel_values": (N, T, C) tokens, "input_ids", "attention_mask", "labels"}``
    (:func:`lm_inputs` with K image tokens): what ``Blip2ForConditionalGeneration`` takes, since
    :class:`ClipImageTower` passes tokens through.
    """

    def __init__(self, tower: ClipImageTower, processor: Blip2Processor, world: ShapesWorld, config: TinyBlip2Recipe,
                 directory=None) -> None:
        if not isinstance(tower, ClipImageTower):
            raise TypeError(f"tower must be a ClipImageTower, got {type(tower).__name__}")
        if tower.views != tuple(config.views):
            raise ValueError(f"tower views {tower.views} differ from config.views {tuple(config.views)}")
        self.tower, self.processor, self.world, self.config = tower, processor, world, config
        k = config.num_query_tokens

        def batch_fn(step: int) -> dict[str, torch.Tensor]:
            images, captions = _images_and_captions(world, config, step)
            device = tower.resnet.conv1.weight.device
            tower.eval()  # train() has just put the model it belongs to in train mode: BatchNorm must stay frozen
            with torch.no_grad():
                tokens = tower(pixel_values(processor, images).to(device)).last_hidden_state  # (N, T, C), frozen
            return {"pixel_values": tokens, **lm_inputs(processor.tokenizer, captions, k)}

        super().__init__(batch_fn, directory)

    def check(self, tower: nn.Module, processor: Blip2Processor, world: ShapesWorld, config: TinyBlip2Recipe) -> None:
        """Raise unless these batches are the ones a training of ``config`` on ``world`` through ``tower`` would make."""
        if config != self.config:
            raise ValueError(f"batches were made for {self.config}, not {config}")
        if world is not self.world:
            raise ValueError("batches were made from another ShapesWorld than world")
        if processor.tokenizer.get_vocab() != self.processor.tokenizer.get_vocab():
            raise ValueError("batches were made with another tokenizer than processor's")
        ours, theirs = self.tower.state_dict(), tower.state_dict()
        if tower is not self.tower and (ours.keys() != theirs.keys()
                                        or not all(torch.equal(ours[n], theirs[n].to(ours[n].device)) for n in ours)):
            raise ValueError("batches were made by an image tower with other weights than this model's")


def train_stage2(model: Blip2ForConditionalGeneration, processor: Blip2Processor, world: ShapesWorld,
                 config: TinyBlip2Recipe, progress: bool = True, eval_every: int = 100, eval_n: int = 240,
                 batches: Stage2Batches | None = None) -> History:
    """Stage 2: the LM loss of ``Blip2ForConditionalGeneration`` on :func:`caption_batch`, training only
    :func:`trainable_parameters` (the image encoder and the LM stay frozen). ``batches``: the same batches with
    the frozen tokens made once (:class:`Stage2Batches`); the training is the same either way.

    Returns the :class:`History` with evals ``em_seen`` and ``em_heldout`` (exact match of greedy captions).
    """
    k = model.config.num_query_tokens
    tokenizer = processor.tokenizer

    if batches is not None:
        batches.check(model.vision_model, processor, world, config)

    def batch_fn(step: int):
        if batches is not None:
            return batches(step)  # the same batch, its pixels already through the frozen tower
        images, captions = _images_and_captions(world, config, step)
        return {"pixel_values": pixel_values(processor, images), **lm_inputs(tokenizer, captions, k)}

    def loss_fn(m: Blip2ForConditionalGeneration, batch) -> torch.Tensor:
        m.vision_model.eval(), m.language_model.eval()  # frozen parts: BatchNorm statistics stay fixed
        return m(**batch).loss

    seen = world.sample(eval_n, "train", seed=10_000 + config.seed)
    heldout = world.sample(eval_n, "heldout", seed=20_000 + config.seed)

    def eval_fn(m: Blip2ForConditionalGeneration) -> dict[str, float]:
        return {"em_seen": exact_match(caption(m, processor, seen.images), seen.captions),
                "em_heldout": exact_match(caption(m, processor, heldout.images), heldout.captions)}

    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=config.stage2_lr, weight_decay=config.weight_decay,
                                  foreach=True)
    scheduler = warmup_cosine(optimizer, config.stage2_steps, warmup=20)
    return train(model, batch_fn, loss_fn, optimizer, config.stage2_steps, eval_fn=eval_fn, eval_every=eval_every,
                 lr_scheduler=scheduler, progress=progress, desc="stage 2: Q-Former -> frozen LM", seed=config.seed)


# ----------------------------------------------------------------------------------------------------------------
# the ablation: every image token straight into the LM (no Q-Former), as LLaVA-style linear connectors do


CONNECTORS = ("linear", "mlp")


class PatchPrefixCaptioner(nn.Module):
    """The frozen encoder's T image tokens, projected one by one, as the LM's prefix: no queries, no Q-Former.

    The alternative BLIP-2 avoids: the prefix is T tokens long (T = 32 here; 257 for ViT-L/14) instead of K.
    ``connector="linear"``: one linear map (LLaVA); ``"mlp"``: Linear -> GELU -> Linear (LLaVA-1.5's connector).
    """

    def __init__(self, vision_model: nn.Module, language_model: OPTForCausalLM, encoder_hidden_size: int,
                 connector: str = "linear") -> None:
        super().__init__()
        if connector not in CONNECTORS:
            raise ValueError(f"connector must be one of {CONNECTORS}, got {connector!r}")
        self.vision_model, self.language_model = vision_model, language_model
        hidden = language_model.config.hidden_size
        if connector == "linear":
            self.projection = nn.Linear(encoder_hidden_size, hidden)
        else:
            self.projection = nn.Sequential(nn.Linear(encoder_hidden_size, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.projection.to(language_model.device)

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
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], 1)
        labels = torch.cat([labels.new_full(prefix.shape[:2], -100), labels], 1)
        return self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def caption(self, processor: Blip2Processor, images: torch.Tensor, max_new_tokens: int = 6) -> list[str]:
        """Greedy captions of (N, 3, H, W) images in [0, 1]."""
        device = self.language_model.device
        prefix = self.prefix(pixel_values(processor, images).to(device))
        bos = self.language_model.get_input_embeddings()(torch.full((len(prefix), 1), BOS, device=device))
        embeds = torch.cat([prefix, bos], 1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
        ids = self.language_model.generate(inputs_embeds=embeds, attention_mask=mask,
                                           max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=PAD)
        return [t.strip() for t in processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def train_patch_prefix(captioner: PatchPrefixCaptioner, processor: Blip2Processor, world: ShapesWorld,
                       config: TinyBlip2Recipe, progress: bool = True, eval_every: int = 100, eval_n: int = 240,
                       batches: Stage2Batches | None = None, num_steps: int | None = None) -> History:
    """Train only ``captioner.projection`` with the stage-2 recipe (same batches, schedule and evals);
    ``batches`` as in :func:`train_stage2` (its K image tokens are dropped: this prefix is the T patch tokens).
    ``num_steps`` (default ``config.stage2_steps``) lets it train longer on the same batches: batch ``step`` is the
    same whatever the length, and the learning rate's cosine spans ``num_steps``."""
    num_steps = config.stage2_steps if num_steps is None else num_steps
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    tokenizer = processor.tokenizer

    k = config.num_query_tokens
    if batches is not None:
        batches.check(captioner.vision_model, processor, world, config)

    def batch_fn(step: int):
        if batches is not None:  # the stored batch (tokens for pixels), without its K image tokens
            b = batches(step)
            return b["pixel_values"], b["input_ids"][:, k:], b["attention_mask"][:, k:], b["labels"][:, k:]
        images, captions = _images_and_captions(world, config, step)
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

    optimizer = torch.optim.AdamW(captioner.projection.parameters(), lr=config.stage2_lr,
                                  weight_decay=config.weight_decay, foreach=True)
    return train(captioner, batch_fn, loss_fn, optimizer, num_steps, eval_fn=eval_fn, eval_every=eval_every,
                 lr_scheduler=warmup_cosine(optimizer, num_steps, warmup=20), progress=progress,
                 desc="ablation: all image tokens -> LM", seed=config.seed)


