"""Time notebook 05's EMA update (`ema_update`, §3) on its two UNets, as written (one `mul_`/`add_` per tensor) and
with `torch._foreach_mul_`/`_foreach_add_` (two calls for all tensors), and check the two give the same weights.

    python scripts/ema_update_probe.py [THREADS]      # default 2; run it alone

Each arm runs 300 updates after a random change of the weights (an optimizer step's stand-in), twice, interleaved;
only the update is timed. Why (2026-12-04): notebook 05's latent UNet took 1.22x as long in the seed study after the
EMA went in, against 1.09x for the trainings it did not touch: ~16 s a run beyond that drift (~12 s in a first reading). Measured here (the
AVX-512 EPYC, 1 and 2 threads, four runs): 2.2-3.6 ms an update on the latent UNet (208 tensors; 3-4 s over 1,200
steps), 1.0-2.1 ms on the digits UNet (115); foreach 0.7-1.0x of that, bit for bit the same weights. So the update
itself costs 3-4 s a run; the rest of those ~16 s is not explained here (not measured further), and foreach would save
about 1 s: the notebook keeps its loop.
"""
import copy
import sys
import time

import torch
from diffusers import UNet2DModel

from mmlab import ldm

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
if threads < 1:
    raise SystemExit(f"THREADS must be a positive integer, got {threads}")
torch.set_num_threads(threads)


def per_tensor(ema_model, model, step, decay=0.995):  # notebook 05's ema_update
    with torch.no_grad():
        d = min(decay, (1 + step) / (10 + step))
        for p_ema, p in zip(ema_model.parameters(), model.parameters()):
            p_ema.mul_(d).add_(p, alpha=1 - d)


def foreach(ema_model, model, step, decay=0.995):
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        ema_params, params = list(ema_model.parameters()), list(model.parameters())
        torch._foreach_mul_(ema_params, d)
        torch._foreach_add_(ema_params, params, alpha=1 - d)


def unets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    digits = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                         down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                         num_class_embeds=11, norm_num_groups=8)             # notebook 05's digits_unet()
    return {"digits UNet": digits, "latent UNet": ldm.tiny_text_unet(cross_attention_dim=64, seed=0, device=torch.device("cpu"))}


for name, unet in unets().items():
    ms, final = {}, {}
    for label, update in (("per tensor", per_tensor), ("foreach", foreach)) * 2:
        torch.manual_seed(1)
        model, ema = copy.deepcopy(unet), copy.deepcopy(unet).requires_grad_(False)
        seconds = 0.0
        for step in range(300):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p), alpha=1e-3)
            t0 = time.perf_counter()
            update(ema, model, step)
            seconds += time.perf_counter() - t0
        ms.setdefault(label, []).append(seconds / 300 * 1e3)
        final[label] = [p.clone() for p in ema.parameters()]
    same = all(torch.equal(a, b) for a, b in zip(final["per tensor"], final["foreach"]))
    print(f"{name}: {len(final['foreach'])} tensors, {threads} thread(s); ms per update: per tensor "
          + " / ".join(f"{v:.2f}" for v in ms["per tensor"]) + ", foreach " + " / ".join(f"{v:.2f}" for v in ms["foreach"])
          + f"; the same weights: {same}")
