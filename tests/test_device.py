"""Device-agnostic by construction, tested where a forgotten device fails.

No GPU exists where CI runs, and passing the CPU explicitly proves nothing when the CPU is also the default. So:

- forward passes, losses and loaders run on the ``meta`` device (shapes without data): a tensor left on the CPU
  meets a meta tensor and torch raises, or the result is not on meta;
- the training loops run on the CPU while the runtime's default device (``mmlab.settings.device``, wherever a module
  imported it) is made ``meta``, under a recording ``TorchFunctionMode`` that logs the device of every tensor a torch
  function returns: a function that forgot to pass ``device`` on falls back to the default, and a meta tensor shows
  up in the log. ``test_the_log_catches_a_forgotten_device`` shows the log failing for exactly that reason.
"""

import sys
from collections import Counter
from dataclasses import replace

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from mmlab import attribution, dalle, ddpm, ldm
from mmlab import blip2 as mb
from mmlab import clip as mclip
from mmlab.data import ShapesWorld
from mmlab.fusion import planted_task, train_fusion

CPU, META = torch.device("cpu"), torch.device("meta")
WORLD = ShapesWorld(image_size=32, seed=0)


class DeviceLog(TorchFunctionMode):
    """Counts the device type of every tensor each torch function (and tensor method) returns."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.devices[leaf.device.type] += 1
        return out


@pytest.fixture
def meta_default(monkeypatch):
    """Make ``settings.device()`` answer ``meta`` in every mmlab module that holds it: the default a forgotten
    ``device`` falls back to."""
    import mmlab.settings

    monkeypatch.setattr(mmlab.settings, "device", lambda: META)
    for name, module in list(sys.modules.items()):
        if name.startswith("mmlab") and getattr(module, "runtime_device", None) is not None:
            monkeypatch.setattr(module, "runtime_device", lambda: META)
    log = DeviceLog()
    with log:
        yield log


def only_cpu(log: DeviceLog) -> None:
    assert log.devices["cpu"] > 0 and set(log.devices) == {"cpu"}, dict(log.devices)


def test_the_log_catches_a_forgotten_device(meta_default):
    # device=None: the sampler falls back to the default device (made meta here), and the log shows it
    ddpm.sample(lambda x_t, t: torch.zeros_like(x_t), (2, 1, 4, 4), ddpm.NoiseSchedule(), 2, "ddim",
                generator=torch.Generator().manual_seed(0), progress=False)
    assert meta_default.devices["meta"] > 0


def test_clip_trains_and_loads_on_the_given_device(meta_default, tmp_path):
    model, history = mclip.train_tiny_clip(mclip.TinyClipRecipe(num_steps=2), progress=False, eval_every=2, device=CPU)
    folder = mclip.save_clip(model, mclip.TinyClipRecipe().model_cfg, tmp_path / "clip")
    loaded, _, _ = mclip.load_clip(f"local-dir:{folder}", device=CPU)
    assert next(loaded.parameters()).device == CPU and len(history.losses) == 2
    only_cpu(meta_default)


def test_blip2_lm_model_and_both_stages_take_a_device(meta_default):
    recipe = mb.TinyBlip2Recipe(lm_steps=2, stage1_steps=2, stage2_steps=2, batch_size=8)
    tokenizer = mb.build_tokenizer(mb.caption_words(WORLD))
    lm, _ = mb.pretrain_lm(recipe, tokenizer, WORLD, progress=False, device=CPU)
    clip_model = mclip.build_clip(mclip.TinyClipRecipe().model_cfg)
    processor = mb.build_processor(tokenizer, 32, recipe.num_query_tokens)
    model = mb.build_blip2(recipe, clip_model, mclip.TinyClipRecipe().model_cfg, lm, tokenizer, device=CPU)
    mb.train_stage1(model, processor, WORLD, recipe, progress=False)
    mb.train_stage2(model, processor, WORLD, replace(recipe), progress=False, eval_every=2, eval_n=4)
    assert len(mb.caption(model, processor, WORLD.sample(2, seed=1).images)) == 2
    only_cpu(meta_default)


def test_dalle_trains_on_the_given_device(meta_default):
    recipe = replace(dalle.TinyDalleRecipe(), vq_steps=2, gpt_steps=2)
    vq, _ = dalle.train_tokenizer(recipe, WORLD, device=CPU, progress=False)
    assert next(vq.parameters()).device == CPU
    only_cpu(meta_default)


def test_fusion_training_and_attribution_follow_the_device(meta_default):
    task = planted_task("mixed", 32, WORLD, seed=1).to(CPU)
    model, history = train_fusion(task, "late", num_steps=2, batch_size=8, device=CPU)
    f = lambda inputs: model(inputs).softmax(-1)  # noqa: E731
    baseline = {k: v.mean(0, keepdim=True) for k, v in task.inputs.items()}
    ig = attribution.integrated_gradients(f, task.inputs, baseline, target=task.labels, steps=2)
    assert all(v.shape == (32,) for v in ig.values()) and len(history.losses) == 2
    only_cpu(meta_default)


def test_sampling_and_the_schedule_follow_the_model_to_meta():
    unet = torch.nn.Conv2d(1, 1, 1).to(META)
    x = ddpm.sample(lambda x_t, t: unet(x_t), (2, 1, 4, 4), ddpm.NoiseSchedule(), 3, "ddpm",
                    generator=torch.Generator().manual_seed(0), device=META, progress=False)
    assert x.device == META and x.shape == (2, 1, 4, 4)

    class Eps(torch.nn.Module):  # a module: sample() takes its device when none is given
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 1)

        def forward(self, x_t, t):
            return self.conv(x_t)

    assert ddpm.sample(Eps().to(META), (2, 1, 4, 4), ddpm.NoiseSchedule(), 2, "ddim", progress=False).device == META
    schedule = ddpm.NoiseSchedule()
    t = torch.tensor([1, 500], device=META)
    assert schedule.snr(t).device == META
    x0 = torch.zeros(2, 1, 4, 4, device=META)
    assert schedule.q_sample(x0, t, torch.zeros_like(x0)).device == META
    assert schedule.alphas_cumprod_on(META) is schedule.alphas_cumprod_on(META)  # copied once, not per call


def test_losses_run_on_meta():
    image_features = torch.nn.functional.normalize(torch.randn(4, 8, device=META), dim=-1)
    text_features = torch.nn.functional.normalize(torch.randn(4, 8, device=META), dim=-1)
    scale = torch.tensor(10.0, device=META)
    assert mclip.contrastive_loss(image_features, text_features, scale).device == META
    assert mclip.siglip_loss(image_features, text_features, scale, torch.tensor(-10.0, device=META)).device == META


def test_loaders_put_the_model_on_the_given_device(tmp_path):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    vae = AutoencoderKL(block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=32)
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=16,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=32)
    ldm.save_components(tmp_path / "sd", vae=vae, unet=unet, scheduler=DDIMScheduler())
    vae2, unet2, _ = ldm.load_components(tmp_path / "sd", device=META)
    assert vae2.device == META and unet2.device == META
    z = torch.zeros(1, 4, 8, 8, device=META)
    assert unet2(z, 10, encoder_hidden_states=torch.zeros(1, 3, 16, device=META)).sample.device == META

    tokenizer = mb.build_tokenizer(mb.caption_words(WORLD))
    recipe = mb.TinyBlip2Recipe(lm_steps=1)
    lm, _ = mb.pretrain_lm(recipe, tokenizer, WORLD, progress=False, device=CPU)
    model = mb.build_blip2(recipe, mclip.build_clip(mclip.TinyClipRecipe().model_cfg), mclip.TinyClipRecipe().model_cfg,
                           lm, tokenizer, device=CPU)
    mb.save_blip2(model, mb.build_processor(tokenizer, 32, recipe.num_query_tokens), tmp_path / "blip2")
    loaded, _ = mb.load_blip2(tmp_path / "blip2", device=META)
    assert loaded.device == META
