"""BLIP-2 stage 2: generative learning through the frozen LM, and the all-image-tokens connector it is compared with."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    Blip2ForConditionalGeneration,
    Blip2Processor,
    OPTForCausalLM,
)

from mmlab.blip2.model import caption, exact_match, trainable_parameters
from mmlab.blip2.processor import BOS, PAD, caption_batch, lm_inputs, pixel_values
from mmlab.blip2.recipe import TinyBlip2Recipe
from mmlab.data import ShapesWorld
from mmlab.train import History, train, warmup_cosine


def train_stage2(model: Blip2ForConditionalGeneration, processor: Blip2Processor, world: ShapesWorld,
                 config: TinyBlip2Recipe, progress: bool = True, eval_every: int = 100, eval_n: int = 240) -> History:
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
                       config: TinyBlip2Recipe, progress: bool = True, eval_every: int = 100, eval_n: int = 240) -> History:
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

    optimizer = torch.optim.AdamW(captioner.projection.parameters(), lr=config.stage2_lr,
                                  weight_decay=config.weight_decay, foreach=True)
    return train(captioner, batch_fn, loss_fn, optimizer, config.stage2_steps, eval_fn=eval_fn, eval_every=eval_every,
                 lr_scheduler=warmup_cosine(optimizer, config.stage2_steps, warmup=20), progress=progress,
                 desc="ablation: all image tokens -> LM", seed=config.seed)


