"""Probe notebook 05's VAE alone: its 600 training steps (the notebook's batches, loss and Adam) at one seed, learning
rate and thread count, and the reconstruction error on the notebook's 256 check images.

    python scripts/vae_lr_probe.py SEED LR THREADS      # e.g. 3 2e-3 1; run it alone, or two one-thread runs at once

Why (2026-12-04, the README's "Seeds 0-4 on one thread"): on one thread seed 3's text-to-image missed its bar with a
VAE whose error was 0.0376 (0.021 on two threads). This reproduced it (seed 3, 2e-3, one thread: 0.0376) and found
1e-3 steadier on one thread (seeds 0 / 3 / 4: 0.0195 / 0.0191 / 0.0205); not yet studied through the notebook's bars.
"""
import sys

import torch
import torch.nn.functional as F

from mmlab import ldm
from mmlab.data import ShapesWorld
from mmlab.train import train

try:
    seed, lr, threads = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
except (IndexError, ValueError):
    raise SystemExit(__doc__) from None
if len(sys.argv) != 4 or lr <= 0 or threads < 1:
    raise SystemExit(__doc__)
torch.set_num_threads(threads)
world = ShapesWorld(image_size=32, seed=0)  # the notebook's WORLD_SEED
vae = ldm.tiny_vae(seed=seed)


def vae_batch(step):
    return world.sample(32, "all", seed=10_000 + step).images * 2 - 1  # (32, 3, 32, 32) in [-1, 1], as VAE_BATCH


def vae_loss(model, x):
    posterior = model.encode(x).latent_dist
    recon = model.decode(posterior.sample(generator=torch.Generator().manual_seed(0))).sample
    return F.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()


history = train(vae, vae_batch, vae_loss, torch.optim.Adam(vae.parameters(), lr=lr, foreach=True), 600, progress=False)
with torch.no_grad():
    check = world.sample(256, "all", seed=77).images * 2 - 1
    recon = vae.decode(vae.encode(check).latent_dist.mode()).sample
print(f"seed {seed}, lr {lr:g}, {threads} thread(s): VAE error {F.mse_loss(recon, check).item():.4f} "
      f"after 600 steps in {history.seconds:.0f} s")
