"""Notebook 04's model zoo at tiny size: the VQA wrappers around transformers' VisualBERT and LXMERT, CoCa over
frozen region features, CoCa's answer and caption read-outs, and the attention-topology maps of the figure.

Every architecture is the reference library's own class (``VisualBertModel``, ``LxmertModel``, ``open_clip.CoCa``);
this module only adds what a VQA task needs around it (an answer head, region boxes) and reads attention weights
back out. The notebook keeps the step counts, the losses, the training calls and the claims.
"""

from __future__ import annotations

import open_clip
import torch
from transformers import LxmertConfig, LxmertModel, VisualBertConfig, VisualBertModel

from mmlab.vqa import WordVocab

# the codes of the attention-topology figure: which module lets token i attend to token j
NONE, JOINT, TEXT_SELF, IMAGE_SELF, CROSS = range(5)
TOPOLOGY_NAMES = ("joint self-attention", "text self-attention", "image self-attention", "cross-attention")


def _check_boxes(boxes: torch.Tensor) -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a (regions, 4) tensor of x1, y1, x2, y2, got {tuple(getattr(boxes, 'shape', ()))}")


class SingleStreamVQA(torch.nn.Module):
    """UNITER-style single stream: ``VisualBertModel`` over [CLS] question [SEP] + region tokens, a head on [CLS].

    forward(ids (B, T), feats (B, R, region_dim)) -> (answer logits (B, A), the encoder's output).
    """

    def __init__(self, vocab_size: int, num_answers: int, boxes: torch.Tensor, region_dim: int = 128, hidden: int = 64,
                 layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        _check_boxes(boxes)
        cfg = VisualBertConfig(vocab_size=vocab_size, hidden_size=hidden, visual_embedding_dim=region_dim + 4,
                               num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
                               max_position_embeddings=32, pad_token_id=0, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)
        self.encoder, self.head = VisualBertModel(cfg), torch.nn.Linear(hidden, num_answers)
        self.register_buffer("boxes", boxes.clone(), persistent=False)  # (R, 4), a region's position

    def forward(self, ids: torch.Tensor, feats: torch.Tensor, output_attentions: bool = False):
        visual = torch.cat([feats, self.boxes.expand(len(feats), -1, -1)], -1)  # (B, R, region_dim + 4)
        out = self.encoder(input_ids=ids, attention_mask=(ids > 0).long(), visual_embeds=visual,
                           visual_attention_mask=torch.ones(visual.shape[:2], dtype=torch.long, device=visual.device),
                           output_attentions=output_attentions)
        return self.head(out.last_hidden_state[:, 0]), out  # (B, A): [CLS] sees words and regions in one stream


class DualStreamVQA(torch.nn.Module):
    """LXMERT: language, object-relationship and cross-modality encoders (``LxmertModel``), a head on [CLS].

    forward(ids (B, T), feats (B, R, region_dim)) -> (answer logits (B, A), the encoder's output).
    """

    def __init__(self, vocab_size: int, num_answers: int, boxes: torch.Tensor, region_dim: int = 128, hidden: int = 64,
                 heads: int = 4, l_layers: int = 1, x_layers: int = 2, r_layers: int = 1) -> None:
        super().__init__()
        _check_boxes(boxes)
        self.encoder = LxmertModel(LxmertConfig(vocab_size=vocab_size, hidden_size=hidden, num_attention_heads=heads,
                                                intermediate_size=2 * hidden, l_layers=l_layers, x_layers=x_layers,
                                                r_layers=r_layers, visual_feat_dim=region_dim, visual_pos_dim=4,
                                                max_position_embeddings=32, hidden_dropout_prob=0.0,
                                                attention_probs_dropout_prob=0.0))
        self.head = torch.nn.Linear(hidden, num_answers)
        self.register_buffer("boxes", boxes.clone(), persistent=False)

    def forward(self, ids: torch.Tensor, feats: torch.Tensor, output_attentions: bool = False):
        out = self.encoder(input_ids=ids, attention_mask=(ids > 0).long(), visual_feats=feats,
                           visual_pos=self.boxes.expand(len(feats), -1, -1), output_attentions=output_attentions)
        return self.head(out.language_output[:, 0]), out  # (B, A)


class RegionEncoder(torch.nn.Module):
    """CoCa's image encoder over frozen regions: (B, R, region_dim) -> pooled (B, width) and tokens (B, R, width)."""

    def __init__(self, boxes: torch.Tensor, region_dim: int = 128, width: int = 64) -> None:
        super().__init__()
        _check_boxes(boxes)
        self.proj, self.ln = torch.nn.Linear(region_dim + 4, width), torch.nn.LayerNorm(width)
        self.transformer = open_clip.transformer.Transformer(width, 1, 4, 2.0)
        self.pool_proj = torch.nn.Linear(width, width)
        self.register_buffer("boxes", boxes.clone(), persistent=False)

    def forward(self, feats: torch.Tensor):
        x = self.ln(self.proj(torch.cat([feats, self.boxes.expand(len(feats), -1, -1)], -1)))  # (B, R, width)
        x = self.transformer(x)  # full self-attention over the regions
        return self.pool_proj(x.mean(1)), x


def build_coca(vocab: WordVocab, boxes: torch.Tensor, context_length: int = 16, width: int = 64) -> open_clip.CoCa:
    """``open_clip.CoCa`` at tiny size over region features, with our word vocabulary in both text decoders."""
    text = {"context_length": context_length, "width": width, "heads": 4, "layers": 1, "mlp_ratio": 2,
            "vocab_size": len(vocab)}
    coca = open_clip.CoCa(embed_dim=width, multimodal_cfg=dict(text),
                          text_cfg={**text, "embed_cls": True, "output_tokens": True, "pad_id": vocab.pad_id},
                          vision_cfg={"image_size": 32, "patch_size": 8, "width": width, "layers": 1, "output_tokens": True},
                          pad_id=vocab.pad_id)
    coca.visual = RegionEncoder(boxes, width=width)
    torch.nn.init.normal_(coca.text_decoder.text_projection, std=width ** -0.5)  # open_clip leaves it torch.empty
    return coca


@torch.no_grad()
def coca_answer(model: open_clip.CoCa, feats: torch.Tensor, questions: list[str], vocab: WordVocab,
                answers: list[str]) -> torch.Tensor:
    """Scores (B, A) of each answer word as the multimodal decoder's next word after the question's "?"."""
    length = model.text.context_length
    tokens = vocab.encode(questions, length).to(feats.device)  # [CLS] question [SEP] [PAD]...
    last = (tokens > 0).sum(1) - 2  # position of "?"
    logits = model(feats, tokens)["logits"]  # (B, L-1, V): next-word scores
    answer_ids = torch.tensor([vocab.stoi[a] for a in answers], device=feats.device)
    return logits[torch.arange(len(tokens), device=tokens.device), last][:, answer_ids]


@torch.no_grad()
def coca_caption(model: open_clip.CoCa, feats: torch.Tensor, vocab: WordVocab, max_len: int = 10) -> list[str]:
    """Greedy captions from the multimodal decoder, prompted with "a" (questions also start at [CLS])."""
    tokens = torch.tensor([[vocab.cls_id, vocab.stoi["a"]]], device=feats.device).repeat(len(feats), 1)
    image_latent, image_embs = model._encode_image(feats)  # encode the regions once
    for _ in range(max_len):
        logits = model(feats, tokens, image_latent=image_latent, image_embs=image_embs, output_labels=False)["logits"][:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], 1)
    words = [" ".join(vocab.itos[i] for i in row.tolist()[1:]) for row in tokens]
    return [" ".join(w.split("[SEP]")[0].split()) for w in words]


def _coded(att: torch.Tensor, blocks: list[tuple[slice, slice, int]] | None) -> torch.Tensor:
    """0/code map of an attention matrix: None = one joint attention, else (rows, cols, code) blocks."""
    att = att.detach().float().cpu()
    if blocks is None:
        return (att > 0).float() * JOINT
    out = torch.zeros_like(att)
    for rows, cols, code in blocks:
        out[rows, cols] = (att[rows, cols] > 0).float() * code
    return out


@torch.no_grad()
def attention_topology(uniter: SingleStreamVQA, lxmert: DualStreamVQA, clip_model: open_clip.CLIP, coca: open_clip.CoCa,
                       ids: torch.Tensor, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Who may attend to whom, read from each model's own attention weights or masks, for one question (1, T).

    Returns name -> (T + R, T + R) map with codes JOINT / TEXT_SELF / IMAGE_SELF / CROSS (NONE where nothing attends);
    text positions first, then the R image tokens.
    """
    if ids.ndim != 2 or len(ids) != 1 or feats.ndim != 3 or len(feats) != 1:
        raise ValueError(f"one question: ids (1, T) and feats (1, R, D), got {tuple(ids.shape)} and {tuple(feats.shape)}")
    T, R = ids.shape[1], feats.shape[1]
    blocks = [(slice(None, T), slice(None, T), TEXT_SELF), (slice(T, None), slice(T, None), IMAGE_SELF),
              (slice(None, T), slice(T, None), CROSS), (slice(T, None), slice(None, T), CROSS)]
    topology = {"UNITER-style\n(single stream)": _coded(uniter(ids, feats, output_attentions=True)[1].attentions[0][0].mean(0), None)}

    # LXMERT returns vision->language cross-attention weights nowhere: capture the cross layer's inputs, call it again
    captured = {}
    xlayer = lxmert.encoder.encoder.x_layers[0]
    hook = xlayer.register_forward_pre_hook(lambda mod, args, kwargs: captured.update(args=args, kwargs=kwargs), with_kwargs=True)
    try:
        lx = lxmert(ids, feats, output_attentions=True)[1]
    finally:
        hook.remove()
    lang_in, lang_mask, vis_in, _ = (list(captured["args"]) + list(captured["kwargs"].values()))[:4]
    v2l = xlayer.visual_attention(vis_in, lang_in, ctx_att_mask=lang_mask, output_attentions=True)[1][0].mean(0)  # (R, T)
    m = torch.zeros(T + R, T + R)
    m[:T, :T] = lx.language_attentions[0][0].mean(0).cpu()  # language self-attention
    m[T:, T:] = lx.vision_attentions[0][0].mean(0).cpu()  # object-relationship self-attention
    m[:T, T:] = lx.cross_encoder_attentions[0][0].mean(0).cpu()  # language -> vision
    m[T:, :T] = v2l.cpu()  # vision -> language
    topology["LXMERT\n(dual stream)"] = _coded(m, blocks)

    m = torch.zeros(T + R, T + R)
    m[:T, :T] = (clip_model.attn_mask[:T, :T] == 0).float().cpu()  # CLIP's text tower: causal; no cross-attention
    topology["CLIP\n(dual encoder; image tower = CNN)"] = _coded(m, blocks)

    m = torch.zeros(T + R, T + R)
    m[:T, :T] = (coca.text.attn_mask[:T, :T] == 0).float().cpu()  # unimodal (and multimodal) decoder: causal
    m[:T, T:] = float(len(coca.text_decoder.cross_attn) > 0)  # multimodal decoder: cross-attention to every image token
    m[T:, T:] = 1.0  # region encoder: full self-attention
    topology["CoCa\n(decoders over image tokens)"] = _coded(m, blocks)
    return topology
