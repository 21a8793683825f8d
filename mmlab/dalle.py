"""DALL·E (Ramesh et al. 2021) at toy size: a discrete image tokenizer, an autoregressive transformer over
caption-then-image tokens, and CLIP reranking of its samples.

DALL·E 1 compresses a 256×256 image into 32×32 tokens of an 8,192-word codebook with a discrete VAE (trained with a
Gumbel-softmax relaxation), models 256 BPE text tokens followed by the 1,024 image tokens with a 12-billion-parameter
decoder-only transformer, and at sampling time draws many candidates per caption and keeps those CLIP ranks highest.
Here, with the real library classes:

* diffusers' ``VQModel`` (a VQ-VAE: nearest-codebook quantisation with a straight-through gradient) turns a 32×32
  ShapesWorld image into 8×8 tokens of a 64-word codebook;
* transformers' ``GPT2LMHeadModel`` models ``[<bos>, colour, shape, <image>]`` followed by the 64 image tokens
  (the loss covers the image tokens: the caption is always given, where DALL·E also weighs a text loss at 1/8);
* the tiny CLIP of notebook 01 reranks the samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmlab.data import ShapesWorld
from mmlab.settings import device as runtime_device
from mmlab.train import History, train, warmup_cosine


@dataclass(frozen=True)
class TinyDalleRecipe:
    """The toy DALL·E of notebook 01: tokenizer, transformer, and their training."""

    image_size: int = 32
    block_out_channels: tuple[int, ...] = (8, 16, 16)  # three blocks: two downsamplings, 32 x 32 -> 8 x 8 tokens
    norm_num_groups: int = 4
    latent_channels: int = 8
    num_codes: int = 64            # codebook size (DALL·E: 8,192)
    vq_steps: int = 600
    vq_lr: float = 2e-3
    vq_batch: int = 32
    num_train_images: int = 2400   # training images tokenized once for the transformer
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    gpt_steps: int = 1500
    gpt_lr: float = 2e-3
    gpt_batch: int = 32
    seed: int = 0


class CaptionVocab:
    """Token ids of the stream ``[<bos>, colour, shape, <image>, image tokens...]``: image codes first (0 .. K-1),
    then the special and caption words."""

    def __init__(self, world: ShapesWorld, num_codes: int) -> None:
        self.num_codes = num_codes
        self.words = ["<bos>", "<image>", *world.colors, *world.shapes]
        self.ids = {w: num_codes + i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return self.num_codes + len(self.words)

    def prompt(self, pairs: list[tuple[str, str]]) -> torch.Tensor:
        """(N, 4) prompt ids for "a {colour} {shape}": the caption, then the token that opens the image."""
        return torch.tensor([[self.ids["<bos>"], self.ids[c], self.ids[s], self.ids["<image>"]] for c, s in pairs])


@dataclass
class TinyDalle:
    """The trained parts: the image tokenizer, the transformer and the vocabulary they share."""

    vq: torch.nn.Module
    gpt: torch.nn.Module
    vocab: CaptionVocab
    grid: int  # tokens per side


def build_tokenizer(recipe: TinyDalleRecipe) -> torch.nn.Module:
    """diffusers' ``VQModel``: an encoder, a 64-word codebook, a decoder (initialised from torch's global RNG)."""
    from diffusers import VQModel

    n = len(recipe.block_out_channels)
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                   up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=recipe.block_out_channels,
                   layers_per_block=1, latent_channels=recipe.latent_channels, sample_size=recipe.image_size,
                   num_vq_embeddings=recipe.num_codes, norm_num_groups=recipe.norm_num_groups)


def image_tokens(vq: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1] -> (N, h * w) codebook indices, row by row."""
    with torch.no_grad():
        latents = vq.encode(images.to(vq.device) * 2 - 1).latents  # (N, C, h, w)
        _, _, (_, _, indices) = vq.quantize(latents)
    return indices.view(len(images), -1)


def decode_tokens(vq: torch.nn.Module, tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, grid * grid) codebook indices -> (N, 3, H, W) images in [0, 1]: look up the codes, run the decoder."""
    with torch.no_grad():
        quant = vq.quantize.get_codebook_entry(tokens.reshape(-1).to(vq.device), (len(tokens), grid, grid, -1))
        images = vq.decode(quant, force_not_quantize=True).sample
    return images.add(1).div(2).clamp(0, 1)


def train_tokenizer(recipe: TinyDalleRecipe, world: ShapesWorld, device: torch.device | None = None,
                    progress: bool = True) -> tuple[torch.nn.Module, History]:
    """Train the VQ-VAE on training-pair images: reconstruction (MSE) plus the codebook and commitment terms."""
    vq = build_tokenizer(recipe).to(device or runtime_device())

    def batch_fn(step: int) -> torch.Tensor:
        return world.sample(recipe.vq_batch, "train", seed=recipe.seed * 1_000_003 + step).images * 2 - 1

    def loss_fn(model, images):
        out = model(images)  # DecoderOutput: sample (B, 3, H, W) and commit_loss
        return F.mse_loss(out.sample, images) + out.commit_loss.mean()

    optimizer = torch.optim.Adam(vq.parameters(), lr=recipe.vq_lr, fused=True)
    history = train(vq, batch_fn, loss_fn, optimizer, recipe.vq_steps, progress=progress, desc="VQ tokenizer",
                    lr_scheduler=warmup_cosine(optimizer, recipe.vq_steps, warmup=max(1, recipe.vq_steps // 20)))
    return vq.eval(), history


def build_transformer(recipe: TinyDalleRecipe, vocab_size: int, num_positions: int) -> torch.nn.Module:
    """transformers' ``GPT2LMHeadModel`` at toy size: a decoder-only transformer over the whole token stream."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_positions=num_positions, n_embd=recipe.n_embd, n_layer=recipe.n_layer,
                        n_head=recipe.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=None, eos_token_id=None)  # the stream has its own <bos>, and no end token
    return GPT2LMHeadModel(config)


def train_transformer(recipe: TinyDalleRecipe, vq: torch.nn.Module, vocab: CaptionVocab, world: ShapesWorld,
                      progress: bool = True) -> tuple[torch.nn.Module, History]:
    """Next-token prediction over ``caption + image tokens`` of training-pair images, tokenized once by ``vq``."""
    data = world.sample(recipe.num_train_images, "train", seed=recipe.seed * 7_919 + 1)
    codes = torch.cat([image_tokens(vq, data.images[i:i + 256]) for i in range(0, len(data), 256)])  # (N, h*w)
    stream = torch.cat([vocab.prompt(list(zip(data.colors, data.shapes))), codes.cpu()], dim=1)  # (N, 4 + h*w)
    gpt = build_transformer(recipe, len(vocab), stream.shape[1]).to(vq.device)
    prompt_len = 4

    def batch_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + step)
        return stream[torch.randint(len(stream), (recipe.gpt_batch,), generator=g)]

    def loss_fn(model, tokens):
        logits = model(input_ids=tokens).logits[:, prompt_len - 1:-1]  # (B, h*w, V): the predictions of image tokens
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, prompt_len:].reshape(-1))

    optimizer = torch.optim.AdamW(gpt.parameters(), lr=recipe.gpt_lr, weight_decay=0.01, fused=True)
    history = train(gpt, batch_fn, loss_fn, optimizer, recipe.gpt_steps, progress=progress, desc="transformer",
                    lr_scheduler=warmup_cosine(optimizer, recipe.gpt_steps, warmup=max(1, recipe.gpt_steps // 20)))
    return gpt.eval(), history


def train_tiny_dalle(recipe: TinyDalleRecipe, world: ShapesWorld | None = None, device: torch.device | None = None,
                     progress: bool = True) -> tuple[TinyDalle, History, History]:
    """Both stages, each seeded by the recipe: the tokenizer, then the transformer over its tokens."""
    world = world or ShapesWorld(image_size=recipe.image_size, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        vq, vq_history = train_tokenizer(recipe, world, device, progress)
        vocab = CaptionVocab(world, recipe.num_codes)
        gpt, gpt_history = train_transformer(recipe, vq, vocab, world, progress)
    grid = recipe.image_size // 2 ** (len(recipe.block_out_channels) - 1)
    return TinyDalle(vq, gpt, vocab, grid), vq_history, gpt_history


def sample_image_tokens(gpt: torch.nn.Module, prompt: torch.Tensor, num_tokens: int, num_codes: int,
                        generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """Draw image tokens one at a time after ``prompt`` (N, P): DALL·E's sampler, with a key/value cache.

    Each step reads the logits of the next position, keeps the image codes only (a caption word is never an image
    token), and samples from their softmax. Returns (N, num_tokens) codebook indices.
    """
    out = gpt(input_ids=prompt.to(gpt.device), use_cache=True)
    tokens = []
    for _ in range(num_tokens):
        logits = out.logits[:, -1, :num_codes] / temperature  # (N, K): image codes only
        probs = logits.float().softmax(-1).cpu()
        nxt = torch.multinomial(probs, 1, generator=generator)  # (N, 1), drawn on the CPU: the same on every device
        tokens.append(nxt)
        out = gpt(input_ids=nxt.to(gpt.device), cache=out.cache, use_cache=True)  # reads one new token
    return torch.cat(tokens, dim=1)


def generate(dalle: TinyDalle, pairs: list[tuple[str, str]], generator: torch.Generator,
             temperature: float = 1.0) -> torch.Tensor:
    """One image per ``(colour, shape)`` caption: sample its tokens, decode them. Returns (N, 3, H, W) in [0, 1]."""
    with torch.no_grad():
        tokens = sample_image_tokens(dalle.gpt, dalle.vocab.prompt(pairs), dalle.grid ** 2, dalle.vocab.num_codes,
                                     generator, temperature)
    return decode_tokens(dalle.vq, tokens, dalle.grid)


def clip_rerank(clip_model, clip_tokenizer, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """CLIP's score of each candidate (P, K, 3, H, W) against its caption (P captions): (P, K) cosine similarities."""
    from mmlab.clip import encode

    num_prompts, k = images.shape[:2]
    with torch.no_grad():
        image_features, text_features = encode(clip_model, images.flatten(0, 1), clip_tokenizer(captions))
    return (image_features.view(num_prompts, k, -1) * text_features[:, None, :]).sum(-1).cpu()  # (P, K)


def evaluate(dalle: TinyDalle, judge: torch.nn.Module, world: ShapesWorld, clip_model, clip_tokenizer, seed: int,
             repeats: int = 4, candidates: int = 8) -> dict[str, float]:
    """What the samples get right, as the judge reads them: for each pair's caption (``repeats`` times),
    ``candidates`` samples; "sample" scores the first of them (a plain draw), "reranked" the one CLIP ranks highest.
    Keys: ``"{seen|held-out} {sample|reranked} {colour|shape|both}"``."""
    from mmlab.judge import judged

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for split, pairs in (("seen", world.train_pairs), ("held-out", world.heldout_pairs)):
        prompts = [p for p in pairs for _ in range(repeats)]
        images = generate(dalle, [p for p in prompts for _ in range(candidates)], generator)
        images = images.view(len(prompts), candidates, *images.shape[1:])  # (P, K, 3, H, W)
        scores = clip_rerank(clip_model, clip_tokenizer, images, [f"a {c} {s}" for c, s in prompts])
        picks = {"sample": images[:, 0], "reranked": images[torch.arange(len(prompts)), scores.argmax(1)]}
        for how, chosen in picks.items():
            for attr, value in judged(judge, world, chosen, prompts).items():
                out[f"{split} {how} {attr}"] = value
    return out
