"""The recipe of the tiny BLIP-2 (sizes and the three trainings) and the transformers configs built from it."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    Blip2QFormerConfig,
    OPTConfig,
)

from mmlab.blip2.processor import BOS, EOS, PAD

# ----------------------------------------------------------------------------------------------------------------
# the recipe


@dataclass(frozen=True)
class TinyBlip2Recipe:
    """The recipe of the tiny BLIP-2: sizes of the Q-Former and the LM, and the three trainings.

    The image encoder is the tiny CLIP of notebook 01 (``mmlab.clip.tiny_clip``), cut after ``feature_stage``.
    """

    image_size: int = 32
    feature_stage: int = 2  # CLIP ResNet stage the Q-Former cross-attends to (4 x 4 x 128 at 32 px)
    views: tuple[str, ...] = ("silhouette", "blur")  # colour-free + shape-free views of the frozen encoder (image_views)
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
    lm_cosine_decay: bool = True  # warm-up, then a cosine to 0 (constant 3e-3 let seed 3 fall to 0.88 at its last step)
    stage1_steps: int = 150  # short and gentle: the tiny stage 1 is the fragile part (notebook 02's appendix)
    stage1_lr: float = 1e-3  # 2e-3 left held-out exact match under its bar at one seed on one thread
    stage2_steps: int = 200  # enough since the silhouette view (600, then 300 before: notebook 02's appendix)
    stage2_lr: float = 2e-3
    batch_size: int = 72
    attribute_batches: bool = True  # grey images -> "a {shape}", flat colour -> "a {color} shape" (as notebook 01)
    shape_fraction: float = 0.0  # grey images per captioned image: none, a grey image has no silhouette to read
    # (with the grey view, 0.25: notebook 02's appendix)
    color_fraction: float = 0.125  # flat-colour images per captioned image
    weight_decay: float = 0.0
    seed: int = 0


def lm_config(config: TinyBlip2Recipe, vocab_size: int) -> OPTConfig:
    """A tiny OPT (decoder-only, pre-LayerNorm, learned positions) with our special-token ids."""
    return OPTConfig(vocab_size=vocab_size, hidden_size=config.lm_hidden, num_hidden_layers=config.lm_layers,
                     ffn_dim=4 * config.lm_hidden, num_attention_heads=config.lm_heads, word_embed_proj_dim=config.lm_hidden,
                     max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, pad_token_id=PAD, bos_token_id=BOS,
                     eos_token_id=EOS)


def qformer_config(config: TinyBlip2Recipe, encoder_hidden_size: int, vocab_size: int) -> Blip2QFormerConfig:
    """A tiny Q-Former (BERT-style; cross-attention to the image every layer; text FFN for stage 1)."""
    return Blip2QFormerConfig(vocab_size=vocab_size, hidden_size=config.qformer_hidden, num_hidden_layers=config.qformer_layers,
                              num_attention_heads=config.qformer_heads, intermediate_size=4 * config.qformer_hidden,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=32,
                              cross_attention_frequency=1, encoder_hidden_size=encoder_hidden_size, use_qformer_text_input=True,
                              pad_token_id=PAD)


