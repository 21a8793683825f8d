"""Probe an engineering option that keeps a recipe's formula: AdamW/Adam with ``fused=True`` instead of ``foreach=True``.

    python scripts/optimizer_probe.py [REPEATS]

For each model the notebooks train (at the notebooks' sizes), times ``optimizer.step()`` alone on fixed random
gradients, foreach against fused, interleaved repeats (this machine's speed drifts), and checks whether the two give
the same weights bit for bit after 20 steps from the same start. Prints the median milliseconds per step, the
steps the notebook takes, so the seconds a run would save, and the largest weight difference. The forward and
backward pass are the same either way, so this is the whole of the difference in a training step.
Run it alone (never beside another torch job).
"""
import copy
import statistics
import sys
import time

import torch
from diffusers import UNet2DModel

from mmlab import ldm, runtime, zoo
from mmlab.data import ShapesWorld
from mmlab.vqa import answer_space, patch_boxes, question_vocab

REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
CPU = torch.device("cpu")
print(f"threads {runtime.set_threads()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})")
scenes = ShapesWorld(image_size=32, seed=0, scene="pair")
vocab, answers, boxes = question_vocab(scenes), answer_space(scenes), patch_boxes(4)


def digits_unet():  # notebook 05's digits UNet
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       num_class_embeds=11, norm_num_groups=8)


# name -> (model, optimizer class and keyword arguments as the notebook has them, training steps in the notebook)
MODELS = {
    "05 latent UNet": (ldm.tiny_text_unet(cross_attention_dim=64, seed=0, device=CPU), torch.optim.AdamW,
                       {"lr": 1e-3, "weight_decay": 0.0}, 1200),
    "05 VAE": (ldm.tiny_vae(seed=0, device=CPU), torch.optim.Adam, {"lr": 1e-3}, 600),
    "05 digits UNet": (digits_unet(), torch.optim.AdamW, {"lr": 2e-3, "weight_decay": 0.0}, 1000),
    "04 UNITER-style": (zoo.SingleStreamVQA(len(vocab), len(answers), boxes), torch.optim.AdamW, {"lr": 3e-3}, 1200),
    "04 LXMERT": (zoo.DualStreamVQA(len(vocab), len(answers), boxes), torch.optim.AdamW, {"lr": 3e-3}, 840),
    "04 CoCa": (zoo.build_coca(vocab, boxes), torch.optim.AdamW, {"lr": 3e-3}, 1200),
}


def fresh(model, opt_cls, kwargs, mode):
    m = copy.deepcopy(model)
    params = [p for p in m.parameters() if p.requires_grad]
    return params, opt_cls(params, **kwargs, **{mode: True})


total = 0.0
for name, (model, opt_cls, kwargs, steps) in MODELS.items():
    g = torch.Generator().manual_seed(0)
    grads = [[torch.randn(p.shape, generator=g) * 1e-2 for p in model.parameters() if p.requires_grad] for _ in range(4)]
    runs = {mode: fresh(model, opt_cls, kwargs, mode) for mode in ("foreach", "fused")}
    for params, opt in runs.values():  # the same 20 updates from the same start: bit for bit?
        for k in range(20):
            for p, gr in zip(params, grads[k % 4]):
                p.grad = gr.clone()
            opt.step()
    diff = max((a - b).abs().max().item() for a, b in zip(runs["foreach"][0], runs["fused"][0]))
    ms = {mode: [] for mode in runs}
    for _ in range(REPEATS):
        for mode, (_, opt) in runs.items():
            t0 = time.perf_counter()
            for _ in range(10):
                opt.step()
            ms[mode].append((time.perf_counter() - t0) / 10 * 1e3)
    fe, fu = statistics.median(ms["foreach"]), statistics.median(ms["fused"])
    saved = (fe - fu) * steps / 1e3
    total += saved
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{name}: {n_params / 1e6:.2f}M parameters in {len(grads[0])} tensors; step foreach {fe:.2f} ms, fused {fu:.2f} ms;"
          f" x {steps} steps: {saved:+.1f} s; largest weight difference after 20 steps {diff:.2e}", flush=True)
print(f"total over these trainings: {total:.1f} s a run")
