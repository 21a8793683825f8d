"""Device-agnostic by construction: every public function that trains or samples takes a device, and its tensors
follow the model's device. No GPU exists where CI runs, so this passes torch.device("cpu") explicitly through each
of them (a hard-coded device anywhere else is caught by tests/test_static.py)."""

from dataclasses import replace

import torch

from mmlab import attribution, ddpm
from mmlab import blip2 as mb
from mmlab import clip as mclip
from mmlab.data import ShapesWorld
from mmlab.fusion import planted_task, train_fusion
from mmlab.train import to_device

CPU = torch.device("cpu")
WORLD = ShapesWorld(image_size=32, seed=0)


def test_clip_trains_on_the_given_device(tmp_path):
    model, history = mclip.train_tiny_clip(mclip.TinyClipRecipe(num_steps=2), progress=False, eval_every=2, device=CPU)
    assert next(model.parameters()).device == CPU and len(history.losses) == 2
    folder = mclip.save_clip(model, mclip.TinyClipRecipe().model_cfg, tmp_path / "clip")
    loaded, _, _ = mclip.load_clip(f"local-dir:{folder}", device=CPU)
    assert next(loaded.parameters()).device == CPU


def test_blip2_lm_model_and_both_stages_take_a_device():
    recipe = mb.TinyBlip2Recipe(lm_steps=2, stage1_steps=2, stage2_steps=2, batch_size=8)
    tokenizer = mb.build_tokenizer(mb.caption_words(WORLD))
    lm, _ = mb.pretrain_lm(recipe, tokenizer, WORLD, progress=False, device=CPU)
    clip_model = mclip.build_clip(mclip.TinyClipRecipe().model_cfg)
    processor = mb.build_processor(tokenizer, 32, recipe.num_query_tokens)
    model = mb.build_blip2(recipe, clip_model, mclip.TinyClipRecipe().model_cfg, lm, tokenizer, device=CPU)
    assert model.device == CPU
    pretrainer, _ = mb.train_stage1(model, processor, WORLD, recipe, progress=False)
    assert next(pretrainer.parameters()).device == CPU
    mb.train_stage2(model, processor, WORLD, replace(recipe), progress=False, eval_every=2, eval_n=4)
    assert len(mb.caption(model, processor, WORLD.sample(2, seed=1).images)) == 2


def test_sampling_takes_a_device():
    x = ddpm.sample(lambda x_t, t: torch.zeros_like(x_t), (2, 1, 4, 4), ddpm.NoiseSchedule(), 3, "ddim",
                    generator=torch.Generator(CPU).manual_seed(0), device=CPU, progress=False)
    assert x.device == CPU and x.shape == (2, 1, 4, 4)


def test_batches_follow_the_model():
    batch = {"a": torch.zeros(2), "b": [torch.ones(1), (torch.ones(1), "text")], "c": 3}
    moved = to_device(batch, CPU)
    assert moved["c"] == 3 and moved["b"][1][1] == "text" and moved["a"].device == CPU


def test_fusion_training_and_attribution_follow_the_device():
    task = planted_task("mixed", 32, WORLD, seed=1).to(CPU)
    assert task.device == CPU and all(v.device == CPU for v in task.inputs.values())
    model, history = train_fusion(task, "late", num_steps=2, batch_size=8, device=CPU)
    assert next(model.parameters()).device == CPU and len(history.losses) == 2
    f = lambda inputs: model(inputs).softmax(-1)  # noqa: E731
    baseline = {k: v.mean(0, keepdim=True) for k, v in task.inputs.items()}
    ig = attribution.integrated_gradients(f, task.inputs, baseline, target=task.labels, steps=2)
    assert all(v.device == CPU and v.shape == (32,) for v in ig.values())
