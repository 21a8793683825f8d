"""Probe notebook 05's budgets at one training seed: run the notebook's own code with other step counts or batch
sizes, through the bars (the score/Langevin checks included), and print the figures the notebook asserts.

    python scripts/sd_steps_probe.py SEED NAME=VALUE [NAME=VALUE ...] [--digits-only | --latent-only | --toy-only]

NAME is one of the Settings cell's budgets: DIGITS_STEPS, DIGITS_BATCH, VAE_STEPS, VAE_BATCH, LDM_STEPS, LDM_BATCH,
TOY_STEPS, TOY_BATCH; or VAE_LR: the VAE's Adam learning rate in units of 1e-4 (the notebook's 10); or DIGITS_WIDTH:
the digits UNet's first-level channels W (block_out_channels (W, 2W); the notebook's 32); or LDM_EMA: the decay of the
EMA of the latent UNet's weights that text-to-image samples from, in units of 1e-3 (the notebook's 995; 0 samples the
trained weights themselves, as the notebook did before 2026-12-04, when its VAE's rate was 2e-3); or LDM_SNR_GAMMA /
DIGITS_SNR_GAMMA: weigh the latent (digits) UNet's per-sample ε loss by min(SNR_t, γ) / SNR_t (Min-SNR-γ, Hang et al.
2023; diffusers' train_text_to_image.py ``--snr_gamma``; the notebook weighs every t alike).
One part alone (after the notebook's first, cheap cells): ``--digits-only`` the digits models
(DDPM, samplers, guidance, flow), ``--latent-only`` the VAE, latent UNet and text-to-image figures, ``--toy-only`` the
2-D score net and its score/Langevin checks. MMLAB_THREADS sets the thread count (a thread count acts like a seed).
``--digits-only`` needs MMLAB_STUDIES=1 (the flow model trains on the probed budgets; its result goes to a temporary
folder, never to notebooks/studies/).
How the budgets were chosen with it: notebook 05's appendix.
"""
import json
import os
import re
import sys
import time
from pathlib import Path

import matplotlib

NAMES = ("DIGITS_STEPS", "DIGITS_BATCH", "VAE_STEPS", "VAE_BATCH", "LDM_STEPS", "LDM_BATCH", "TOY_STEPS", "TOY_BATCH",
         "DIGITS_WIDTH", "LDM_EMA", "VAE_LR", "LDM_SNR_GAMMA", "DIGITS_SNR_GAMMA")
PARTS = ("--digits-only", "--latent-only", "--toy-only")
args = [a for a in sys.argv[1:] if not a.startswith("--")]
parts = [a for a in sys.argv[1:] if a.startswith("--")]
if len(args) < 2 or not all("=" in a for a in args[1:]) or len(parts) > 1 or not set(parts) <= set(PARTS):
    raise SystemExit(__doc__)
budgets = {name: int(value) for name, value in (a.split("=") for a in args[1:])}
for name in budgets:
    if name not in NAMES:
        raise SystemExit(f"unknown budget {name!r}; choose from {', '.join(NAMES)}")
os.environ["MMLAB_SEED"] = args[0]
matplotlib.use("Agg")
notebook = Path(__file__).resolve().parent.parent / "notebooks" / "05_stable_diffusion.ipynb"
cells = json.loads(notebook.read_text())["cells"]
src = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
width = budgets.pop("DIGITS_WIDTH", None)
src = src.replace("mplot.small_figures()", "".join(f"{name} = {value}\n" for name, value in budgets.items()))  # end of Settings
if width is not None:  # the digits UNet (the notebook's only block_out_channels; the latent UNet's are in mmlab.ldm)
    if src.count("block_out_channels=(32, 64)") != 1:
        raise SystemExit("the digits UNet's block_out_channels=(32, 64) is not in notebook 05: update this script")
    src = src.replace("block_out_channels=(32, 64)", f"block_out_channels=({width}, {2 * width})")
    budgets["DIGITS_WIDTH"] = width
vae_lr = budgets.pop("VAE_LR", None)
if vae_lr is not None:  # the VAE's optimizer (the notebook's only Adam over vae.parameters())
    vae_opt = re.findall(r"torch\.optim\.Adam\(vae\.parameters\(\), lr=[0-9.e-]+", src)
    if len(vae_opt) != 1:
        raise SystemExit("the VAE's optimizer is not in notebook 05: update this script")
    src = src.replace(vae_opt[0], f"torch.optim.Adam(vae.parameters(), lr={vae_lr / 1e4!r}")
    budgets["VAE_LR"] = vae_lr
ema = budgets.pop("LDM_EMA", None)
if ema is not None:  # the decay of the latent UNet's EMA (0: sample the trained weights themselves)
    ema_call = "ema_update(ldm_ema, text_unet, step)"
    if src.count(ema_call) != 1 or src.count("ldm_ema(") != 2:
        raise SystemExit("the latent UNet's EMA is not in notebook 05 as this script expects: update this script")
    if ema:
        src = src.replace(ema_call, f"ema_update(ldm_ema, text_unet, step, decay={ema / 1000!r})")
    else:
        src = src.replace("ldm_ema(", "text_unet(").replace("unet=ldm_ema,", "unet=text_unet,")
    budgets["LDM_EMA"] = ema
LOSSES = {"LDM_SNR_GAMMA": ("ldm_schedule", "model(ldm_schedule.q_sample(z0, t, noise), t, encoder_hidden_states=context).sample"),
          "DIGITS_SNR_GAMMA": ("train_schedule", "model(train_schedule.q_sample(x0, t, noise), t, class_labels=y).sample")}
for name, (schedule, eps) in LOSSES.items():  # Min-SNR-γ: the per-sample squared error weighed by min(SNR_t, γ) / SNR_t
    gamma = budgets.pop(name, None)
    if gamma is None:
        continue
    old = f"return F.mse_loss({eps}, noise)"
    if src.count(old) != 1:
        raise SystemExit(f"the loss that {name} weighs is not in notebook 05 as this script expects: update this script")
    snr = f"{schedule}.snr(t).to(noise.device)"
    src = src.replace(old, f"return ((torch.clamp({snr}, max={gamma}) / {snr}) * ({eps} - noise).pow(2).mean((1, 2, 3))).mean()")
    budgets[name] = gamma
# a probe's study (MMLAB_STUDIES=1) must never overwrite the notebook's stored result: store it in a folder of its own
study_call = 'studies.run("05_stable_diffusion", "rectified flow", flow_study)'
if src.count(study_call) != 1:
    raise SystemExit("notebook 05's studies.run call is not as this script expects: update this script")
src = src.replace(study_call, study_call[:-1] + ", directory=__import__('tempfile').mkdtemp(prefix='probe-studies-'))")
digits, latent, toy = (src.index(first) for first in ("from diffusers import UNet2DModel", "from mmlab import clip as mclip",
                                                      "angles = torch.arange(8)"))
if parts == ["--digits-only"]:
    src = src[:latent]
    src += ("\nprint({'DDIM-50': digit_results['DDIM-50'][0], 'DDPM-1000': digit_results['DDPM-1000'][0],"
            " 'guidance': guidance_curve, 'flow': flow['class-faithful']})\n")
elif parts == ["--latent-only"]:
    ema_def = src[src.index("def ema_update("):src.index("optimizer = torch.optim.AdamW(unet.parameters()")]
    src = src[:digits] + ema_def + src[latent:toy]  # the latent UNet's EMA uses the digits section's ema_update
    src += ("\nprint({'best scale': best_scale, 'colour': t2i[best_scale]['colour'],"
            " 'colour+shape': t2i[best_scale]['colour+shape'], 'VAE MSE': F.mse_loss(recon, check).item()})\n")
elif parts == ["--toy-only"]:
    src = src[:digits] + src[toy:src.index("import tempfile")]
    src += ("\nprint({'min cos(eps, score) at t = 200/500/900': min(score_cos[t] for t in (200, 500, 900)),"
            " 'Langevin on the modes': toy['Langevin'][0], 'DDPM on the modes': toy['DDPM'][0]})\n")
else:  # everything up to the bars cell, without the seed table
    src = src[: src.index("from mmlab import seeds")] + "\n" + src[src.index("bars = {"):src.index("from mmlab import exercises")]
t0 = time.perf_counter()
exec(compile(src, str(notebook), "exec"), {"__name__": "__main__"})
print(f"probe {budgets} seed {args[0]}: {time.perf_counter() - t0:.0f} s")
