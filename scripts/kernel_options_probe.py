"""Probe engineering options that leave a recipe alone: do they make notebook 05's training steps or sampling faster?

    python scripts/kernel_options_probe.py [REPEATS]

Times, on the notebook's own model sizes and batch sizes, with interleaved repeats (this machine's speed drifts):
1. the latent UNet's attention: PyTorch's default SDPA kernel, the math SDPA kernel, diffusers' eager AttnProcessor;
2. channels_last memory format against contiguous, for the latent UNet, the VAE and the digits UNet;
3. torch.inference_mode against torch.no_grad for a 50-step digits sampling pass (200 images).
Each training step is forward + backward + AdamW(foreach). Prints the median milliseconds per step or per pass.
Run it alone (never beside another torch job). Issue 18's note and the README have what it found.
"""
import contextlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.models.attention_processor import AttnProcessor
from torch.nn.attention import SDPBackend, sdpa_kernel

from mmlab import ldm, runtime

REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 6
CPU = torch.device("cpu")
print(f"threads {runtime.set_threads()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})")
g = torch.Generator().manual_seed(0)
z, ctx, t32 = torch.randn(32, 4, 8, 8, generator=g), torch.randn(32, 16, 64, generator=g), torch.randint(1000, (32,), generator=g)
x = torch.randn(32, 3, 32, 32, generator=g)
d, y, t64 = torch.randn(64, 1, 8, 8, generator=g), torch.randint(10, (64,), generator=g), torch.randint(1000, (64,), generator=g)


def digits_unet():  # notebook 05's digits UNet
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       num_class_embeds=11, norm_num_groups=8)


def ldm_loss(model, fmt):
    return F.mse_loss(model(z.contiguous(memory_format=fmt), t32, encoder_hidden_states=ctx).sample, z)


def vae_loss(model, fmt):
    posterior = model.encode(x.contiguous(memory_format=fmt)).latent_dist
    return F.mse_loss(model.decode(posterior.sample(generator=torch.Generator().manual_seed(0))).sample, x) + 1e-6 * posterior.kl().mean()


def digits_loss(model, fmt):
    return F.mse_loss(model(d.contiguous(memory_format=fmt), t64, class_labels=y).sample, d)


def compare(title, variants):
    """variants: name -> (model, loss(model), context manager factory). Median ms per training step."""
    steps = {}
    for name, (model, loss_fn, cm) in variants.items():
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)

        def step(model=model, loss_fn=loss_fn, cm=cm, opt=opt):
            with cm():
                loss = loss_fn(model)
                opt.zero_grad()
                loss.backward()
                opt.step()
        steps[name] = step
    for step in steps.values():
        for _ in range(3):
            step()
    ms = {name: [] for name in steps}
    for _ in range(REPEATS):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(8):
                step()
            ms[name].append((time.perf_counter() - t0) / 8 * 1e3)
    print(f"{title}: " + " · ".join(f"{n} {statistics.median(v):.1f} ms" for n, v in ms.items()), flush=True)


def eager_unet():
    model = ldm.tiny_text_unet(cross_attention_dim=64, seed=0, device=CPU)
    model.set_attn_processor(AttnProcessor())
    return model


null = contextlib.nullcontext
compare("latent UNet step, attention", {
    "SDPA default": (ldm.tiny_text_unet(cross_attention_dim=64, seed=0, device=CPU), lambda m: ldm_loss(m, torch.contiguous_format), null),
    "SDPA math": (ldm.tiny_text_unet(cross_attention_dim=64, seed=0, device=CPU), lambda m: ldm_loss(m, torch.contiguous_format),
                  lambda: sdpa_kernel(SDPBackend.MATH)),
    "eager AttnProcessor": (eager_unet(), lambda m: ldm_loss(m, torch.contiguous_format), null)})
for title, make, loss in (("latent UNet", lambda: ldm.tiny_text_unet(cross_attention_dim=64, seed=0, device=CPU), ldm_loss),
                          ("VAE", lambda: ldm.tiny_vae(seed=0, device=CPU), vae_loss), ("digits UNet", digits_unet, digits_loss)):
    compare(f"{title} step, memory format", {
        "contiguous": (make(), lambda m, loss=loss: loss(m, torch.contiguous_format), null),
        "channels_last": (make().to(memory_format=torch.channels_last), lambda m, loss=loss: loss(m, torch.channels_last), null)})

model, xs, ys = digits_unet(), torch.randn(200, 1, 8, 8, generator=g), torch.randint(11, (200,), generator=g)
ms = {"no_grad": [], "inference_mode": []}
for _ in range(REPEATS):
    for name, cm in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
        t0 = time.perf_counter()
        with cm():
            for t in range(0, 1000, 20):
                model(xs, t, class_labels=ys)
        ms[name].append((time.perf_counter() - t0) * 1e3)
print("digits sampling pass (50 UNet calls, 200 images): " + " · ".join(f"{n} {statistics.median(v):.0f} ms" for n, v in ms.items()))
