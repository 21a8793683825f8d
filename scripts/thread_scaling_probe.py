"""Probe how a training step scales with threads and batch size: is a kernel's second thread busy?

    python scripts/thread_scaling_probe.py THREADS      # e.g. 1, then 2; run it alone (never beside another torch job)

Times 15 training steps (forward, backward, AdamW foreach; after 3 warm-up steps) of notebook 05's latent UNet
(batch 16-128) and VAE (32-128) and notebook 01's tiny CLIP (128, 256) on seeded random inputs, and prints the
milliseconds per step. What it found (2026-12-04, the README's "Two notebooks side by side"): the latent UNet barely
uses a second thread, which is why `mmlab run` runs two notebooks at a time, one thread each, on 2 cores.
"""
import sys
import time

import torch
import torch.nn.functional as F

from mmlab import clip as mclip
from mmlab import ldm
from mmlab.clip_training import TinyClipRecipe

if len(sys.argv) != 2 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
    raise SystemExit(__doc__)
torch.set_num_threads(int(sys.argv[1]))
print(f"threads {torch.get_num_threads()}")
g = torch.Generator().manual_seed(0)


def bench(name: str, model: torch.nn.Module, loss_fn, n: int = 15) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step() -> None:
        loss = loss_fn(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    print(f"{name}\t{(time.perf_counter() - t0) / n * 1e3:.1f} ms", flush=True)


for B in (16, 32, 64, 128):
    z, ctx, t = torch.randn(B, 4, 8, 8, generator=g), torch.randn(B, 16, 64, generator=g), torch.randint(1000, (B,), generator=g)
    bench(f"latent UNet B={B}", ldm.tiny_text_unet(cross_attention_dim=64, seed=0),
          lambda m, z=z, t=t, ctx=ctx: F.mse_loss(m(z, t, encoder_hidden_states=ctx).sample, z))
for B in (32, 64, 128):
    x = torch.randn(B, 3, 32, 32, generator=g)
    bench(f"VAE B={B}", ldm.tiny_vae(seed=0), lambda m, x=x: F.mse_loss(
        m.decode(m.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(0))).sample, x))
for B in (128, 256):
    images, tokens = torch.randn(B, 3, 32, 32, generator=g), torch.randint(1, 400, (B, 16), generator=g)
    bench(f"tiny CLIP B={B}", mclip.build_clip(TinyClipRecipe().model_cfg).train(),
          lambda m, images=images, tokens=tokens: mclip.contrastive_loss(*m(images, tokens)[:3]))
