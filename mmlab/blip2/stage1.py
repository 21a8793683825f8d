"""BLIP-2 stage 1: representation learning with ITC, ITM and ITG around the real ``Blip2QFormerModel``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2QFormerModel,
)
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from mmlab.blip2.processor import DEC, caption_batch, pixel_values
from mmlab.blip2.recipe import TinyBlip2Recipe
from mmlab.data import ShapesWorld
from mmlab.train import History, train, warmup_cosine

# transformers 4.x builds the Q-Former's additive mask from a 0/1 one (get_extended_attention_mask); 5.x takes it as is
_QFORMER_TAKES_01_MASKS = hasattr(Blip2QFormerModel, "get_extended_attention_mask")

# ----------------------------------------------------------------------------------------------------------------
# stage 1: representation learning with ITC, ITM and ITG around the real Blip2QFormerModel


def _check_mask_args(num_query_tokens: int, text_attention_mask: torch.Tensor) -> None:
    if not isinstance(text_attention_mask, torch.Tensor) or text_attention_mask.ndim != 2:
        raise ValueError(f"text_attention_mask must be (N, L), got shape {tuple(getattr(text_attention_mask, 'shape', ()))}")
    if not isinstance(num_query_tokens, int) or num_query_tokens < 1:
        raise ValueError(f"num_query_tokens must be an int >= 1, got {num_query_tokens!r}")


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
    _check_mask_args(num_query_tokens, text_attention_mask)
    n, length = text_attention_mask.shape
    k = num_query_tokens
    size = k + length
    device = text_attention_mask.device
    is_query = torch.arange(size, device=device) < k  # (S,)
    same_modality = is_query[:, None] == is_query[None, :]  # (S, S)
    causal_text = torch.ones(length, length, device=device).tril().bool()
    itg = torch.zeros(size, size, dtype=torch.bool, device=device)
    itg[:k, :k] = True  # queries see queries
    itg[k:, :k] = True  # text sees every query
    itg[k:, k:] = causal_text  # and earlier text
    keep = torch.cat([torch.ones(n, k, dtype=torch.bool, device=device), text_attention_mask.bool()], 1)[:, None, :]  # (N, 1, S)
    masks = {"itc": same_modality, "itm": torch.ones(size, size, dtype=torch.bool, device=device), "itg": itg}
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
        if _QFORMER_TAKES_01_MASKS:  # transformers 4.x turns an (N, S, S) 0/1 mask into the additive one itself
            attention_mask = mask.to(embeds.dtype)
        else:  # transformers >= 5.x takes the additive (N, 1, S, S) mask as it is
            attention_mask = torch.zeros(mask.shape, dtype=embeds.dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(embeds.dtype).min)[:, None]
        return self.qformer(query_embeds=embeds, query_length=self.num_query_tokens, attention_mask=attention_mask,
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
        itm_labels = torch.cat([torch.ones(len(input_ids)), torch.zeros(2 * len(input_ids))]).long().to(itm_logits.device)
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
                 config: TinyBlip2Recipe, progress: bool = True) -> tuple[QFormerPretrainer, History]:
    """Stage 1: ITC + ITM + ITG on :func:`caption_batch` with ``model``'s frozen image encoder.

    Returns the trained :class:`QFormerPretrainer` and its :class:`History`; carry it over with :func:`carry_stage1`.
    """
    device = model.device
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        pretrainer = QFormerPretrainer(model.config.qformer_config, model.config.num_query_tokens, config.embed_dim).to(device)
    tokenizer = processor.tokenizer
    tower = model.vision_model

    def batch_fn(step: int):
        images, captions = caption_batch(world, config.batch_size, seed=config.seed * 1_000_003 + 500_000 + step,
                                         attribute_batches=config.attribute_batches, shape_fraction=config.shape_fraction,
                                         color_fraction=config.color_fraction)
        with torch.no_grad():
            image_embeds = tower(pixel_values(processor, images).to(device)).last_hidden_state  # (N, T, C), frozen
        text = tokenizer(captions, padding=True, return_tensors="pt")
        distinct = {c: i for i, c in enumerate(dict.fromkeys(captions))}
        return image_embeds, text["input_ids"], text["attention_mask"], torch.tensor([distinct[c] for c in captions])

    def loss_fn(m: QFormerPretrainer, batch) -> torch.Tensor:
        return m(*batch)["loss"]

    optimizer = torch.optim.AdamW(pretrainer.parameters(), lr=config.stage1_lr, weight_decay=config.weight_decay,
                                  foreach=True)
    history = train(pretrainer, batch_fn, loss_fn, optimizer, config.stage1_steps, seed=config.seed,
                    lr_scheduler=warmup_cosine(optimizer, config.stage1_steps, warmup=20), progress=progress,
                    desc="stage 1: ITC + ITM + ITG")
    return pretrainer.eval(), history


