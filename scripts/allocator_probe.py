"""Probe the memory allocator: are the notebooks' training steps faster under TCMalloc or jemalloc, same weights?

    python scripts/allocator_probe.py [ROUNDS] [STEPS]

Starts one child process per allocator and round, interleaved (this machine's speed drifts from minute to minute):
the system's malloc, TCMalloc (libtcmalloc_minimal.so.4) and jemalloc (libjemalloc.so.2) when installed, each by
LD_PRELOAD. A child builds notebook 05's latent UNet, VAE and digits UNet, notebook 01's tiny CLIP and 05's 2-D score
network (seeded, the notebooks' batch sizes), times STEPS training steps of each (forward, backward, AdamW foreach;
the score network 20x as many) and prints the milliseconds per step and an exact checksum of the trained parameters.
The parent prints the median per allocator and whether every checksum matches the system's (the allocator must not
change a figure). Run it alone (never beside another torch job). Issue 18's note and the README have what it found.
"""
import ctypes.util
import os
import statistics
import subprocess
import sys
import time

LIBRARIES = {"system": None, "tcmalloc": ctypes.util.find_library("tcmalloc_minimal"), "jemalloc": ctypes.util.find_library("jemalloc")}


def child(steps: int) -> None:
    import hashlib

    import torch
    import torch.nn.functional as F
    from diffusers import UNet2DModel

    from mmlab import clip as mclip
    from mmlab import ldm, runtime
    from mmlab.clip_training import TinyClipRecipe

    runtime.set_threads()
    g = torch.Generator().manual_seed(0)
    z, ctx, t32 = torch.randn(32, 4, 8, 8, generator=g), torch.randn(32, 16, 64, generator=g), torch.randint(1000, (32,), generator=g)
    x = torch.randn(32, 3, 32, 32, generator=g)
    d, y, t64 = torch.randn(64, 1, 8, 8, generator=g), torch.randint(10, (64,), generator=g), torch.randint(1000, (64,), generator=g)
    images, tokens = torch.randn(128, 3, 32, 32, generator=g), torch.randint(1, 400, (128, 16), generator=g)
    points = torch.randn(256, 3, generator=g)
    torch.manual_seed(0)
    digits_unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                              down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                              num_class_embeds=11, norm_num_groups=8)
    score_net = torch.nn.Sequential(torch.nn.Linear(3, 256), torch.nn.SiLU(), torch.nn.Linear(256, 256), torch.nn.SiLU(),
                                    torch.nn.Linear(256, 256), torch.nn.SiLU(), torch.nn.Linear(256, 2))
    work = {  # name: (model, loss, steps)
        "latent UNet": (ldm.tiny_text_unet(cross_attention_dim=64, seed=0),
                        lambda m: F.mse_loss(m(z, t32, encoder_hidden_states=ctx).sample, z), steps),
        "VAE": (ldm.tiny_vae(seed=0), lambda m: F.mse_loss(
            m.decode(m.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(0))).sample, x), steps),
        "digits UNet": (digits_unet, lambda m: F.mse_loss(m(d, t64, class_labels=y).sample, d), steps),
        "tiny CLIP": (mclip.build_clip(TinyClipRecipe().model_cfg).train(),
                      lambda m: mclip.contrastive_loss(*m(images, tokens)[:3]), steps),
        "score net": (score_net, lambda m: m(points).pow(2).mean(), 20 * steps),
    }
    for name, (model, loss_fn, n) in work.items():
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

        def step(model=model, loss_fn=loss_fn, optimizer=optimizer):
            loss = loss_fn(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        ms = (time.perf_counter() - t0) / n * 1e3
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
        print(f"{name}\t{ms:.3f}\t{digest}", flush=True)


def main(rounds: int, steps: int) -> None:
    found = {name: lib for name, lib in LIBRARIES.items() if name == "system" or lib}
    print("allocators: " + ", ".join(f"{n} ({lib or 'glibc'})" for n, lib in found.items()), flush=True)
    ms: dict[str, dict[str, list[float]]] = {n: {} for n in found}
    digests: dict[str, dict[str, set[str]]] = {n: {} for n in found}
    for r in range(rounds):
        for name, lib in found.items():
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            if lib:
                env["LD_PRELOAD"] = lib
            out = subprocess.run([sys.executable, __file__, "--child", str(steps)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            for line in out.splitlines():
                work, value, digest = line.split("\t")
                ms[name].setdefault(work, []).append(float(value))
                digests[name].setdefault(work, set()).add(digest)
            print(f"round {r + 1} {name}: " + " · ".join(f"{w} {v[-1]:.1f}" for w, v in ms[name].items()), flush=True)
    print(f"median ms per step over {rounds} rounds (ratio to the system's malloc):")
    for name in found:
        median = {w: statistics.median(v) for w, v in ms[name].items()}
        print(f"  {name:<9} " + " · ".join(f"{w} {m:.2f} ({m / statistics.median(ms['system'][w]):.2f})" for w, m in median.items()))
        same = all(digests[name][w] == digests["system"][w] for w in digests[name])
        print(f"  {'':<9} trained parameters bit for bit the system's: {same}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 5, int(sys.argv[2]) if len(sys.argv) > 2 else 20)
