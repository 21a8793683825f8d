"""Bad input over the public API the notebooks import: wrong types, shapes, ranges, NaN and empty inputs each raise a
ValueError or TypeError whose message names the argument. Nothing is silently fixed."""

import math

import pytest
import torch

from mmlab import attribution, cache, ddpm, plot, pretrained, settings, train
from mmlab import blip2 as mb
from mmlab import clip as mclip
from mmlab.data import ShapesWorld

F2 = torch.randn(4, 8)
NAN = torch.full((4, 8), math.nan)
IMAGES = torch.rand(2, 3, 32, 32)
WORLD = ShapesWorld(image_size=32, seed=0)
SCHEDULE = ddpm.NoiseSchedule()
TOKENIZER = mb.build_tokenizer(mb.caption_words(WORLD))
PROCESSOR = mb.build_processor(TOKENIZER, 32, 4)

CASES = [
    # (id, call, exception, words the message must contain)
    ("loss: shapes differ", lambda: mclip.contrastive_loss(F2, torch.randn(5, 8), 1.0), ValueError, "text_features"),
    ("loss: 1-D", lambda: mclip.contrastive_loss(torch.randn(8), torch.randn(8), 1.0), ValueError, "image_features"),
    ("loss: NaN", lambda: mclip.contrastive_loss(NAN, F2, 1.0), ValueError, "image_features"),
    ("loss: empty batch", lambda: mclip.contrastive_loss(torch.zeros(0, 8), torch.zeros(0, 8), 1.0), ValueError, "B >= 1"),
    ("loss: ints", lambda: mclip.contrastive_loss(torch.ones(4, 8, dtype=torch.long), F2, 1.0), TypeError, "image_features"),
    ("preprocess: 3-D", lambda: mclip.preprocess_tensors(None, torch.rand(3, 32, 32)), ValueError, "images"),
    ("preprocess: range", lambda: mclip.preprocess_tensors(None, IMAGES * 3), ValueError, "images"),
    ("preprocess: NaN", lambda: mclip.preprocess_tensors(None, IMAGES * math.nan), ValueError, "images"),
    ("zero-shot: no class", lambda: mclip.zero_shot_classifier(None, None, [], ["a {}"]), ValueError, "classnames"),
    ("zero-shot: template", lambda: mclip.zero_shot_classifier(None, None, ["x"], ["no slot"]), ValueError, "template"),
    ("zero-shot: classifier", lambda: mclip.zero_shot_predict(None, IMAGES, torch.randn(4)), ValueError, "classifier"),
    ("memo tokenizer: str", lambda: mclip.MemoTokenizer(lambda t: t)("a red circle"), TypeError, "texts"),
    ("blip2 pixels: shape", lambda: mb.pixel_values(PROCESSOR, torch.rand(3, 32, 32)), ValueError, "images"),
    ("blip2 pixels: range", lambda: mb.pixel_values(PROCESSOR, IMAGES + 2), ValueError, "images"),
    ("blip2 pixels: empty", lambda: mb.pixel_values(PROCESSOR, torch.zeros(0, 3, 32, 32)), ValueError, "images"),
    ("exact match: lengths", lambda: mb.exact_match(["a"], ["a", "b"]), ValueError, "predictions"),
    ("exact match: empty", lambda: mb.exact_match([], []), ValueError, "captions"),
    ("masks: 1-D", lambda: mb.stage1_masks(4, torch.ones(5)), ValueError, "text_attention_mask"),
    ("masks: K", lambda: mb.stage1_masks(0, torch.ones(1, 5)), ValueError, "num_query_tokens"),
    ("captions: kind", lambda: mb.attribute_captions(["red"], ["circle"], ["size"]), ValueError, "kinds"),
    ("tokenizer: duplicates", lambda: mb.build_tokenizer(["a", "a"]), ValueError, "words"),
    ("caption: max_new_tokens", lambda: mb.caption(None, PROCESSOR, IMAGES, max_new_tokens=0), ValueError, "max_new_tokens"),
    ("tiny_blip2: seed", lambda: mb.tiny_blip2(seed="0"), TypeError, "seed"),
    ("train: steps", lambda: train.train(torch.nn.Linear(1, 1), None, None, None, 0), ValueError, "num_steps"),
    ("train: eval_every", lambda: train.train(torch.nn.Linear(1, 1), None, None, None, 1, eval_every=0), ValueError, "eval_every"),
    ("schedule: warmup", lambda: train.warmup_cosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.1), 10, 0),
     ValueError, "warmup"),
    ("ddpm: timesteps", lambda: ddpm.NoiseSchedule(num_train_timesteps=1), ValueError, "num_train_timesteps"),
    ("ddpm: betas", lambda: ddpm.NoiseSchedule(beta_start=0.5, beta_end=0.1), ValueError, "beta_start"),
    ("ddpm: schedule name", lambda: ddpm.NoiseSchedule(beta_schedule="cubic"), ValueError, "beta_schedule"),
    ("ddpm: q_sample noise", lambda: SCHEDULE.q_sample(torch.zeros(2, 4), 3, torch.zeros(2, 5)), ValueError, "noise"),
    ("ddpm: t range", lambda: SCHEDULE.q_sample(torch.zeros(2, 4), 5000, torch.zeros(2, 4)), ValueError, "t"),
    ("ddpm: step shape", lambda: ddpm.ddim_step(SCHEDULE, torch.zeros(1, 3), 10, 5, torch.zeros(1, 4)), ValueError, "model_output"),
    ("ddpm: prev_t", lambda: ddpm.ddim_step(SCHEDULE, torch.zeros(1, 4), 10, 20, torch.zeros(1, 4)), ValueError, "prev_t"),
    ("ddpm: sampler", lambda: ddpm.sample(lambda x, t: x, (1, 4), SCHEDULE, 5, sampler="euler"), ValueError, "sampler"),
    ("ddpm: inference steps", lambda: SCHEDULE.timesteps(0), ValueError, "num_inference_steps"),
    ("shapley: empty inputs", lambda: attribution.modality_shapley(lambda d: d, {}, {}), TypeError, "inputs"),
    ("shapley: batch sizes", lambda: attribution.modality_shapley(lambda d: d["a"].sum(1), {"a": torch.zeros(2, 3),
     "b": torch.zeros(3, 3)}, {"a": torch.zeros(3), "b": torch.zeros(3)}), ValueError, "batch size"),
    ("shares: empty", lambda: attribution.modality_share({}), ValueError, "attributions"),
    ("plot: no images", lambda: plot.image_grid(torch.zeros(0, 3, 8, 8)), ValueError, "images"),
    ("seed: negative", lambda: settings.seed_everything(-1), ValueError, "seed"),
    ("seed: bool", lambda: settings.seed_everything(True), ValueError, "seed"),
    ("cache: name", lambda: cache.artefact_dir("a/b", {}), ValueError, "name"),
    ("pretrained: key", lambda: pretrained.fits("gpt", torch.device("cpu")), ValueError, "key"),
    ("world: colour", lambda: ShapesWorld(colors=["red", "mauve"]), ValueError, "colors"),
    ("world: n", lambda: WORLD.sample(-1), ValueError, "n"),
    ("world: split", lambda: WORLD.sample(2, split="test"), ValueError, "split"),
]


@pytest.mark.parametrize("call, exc, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value), f"message does not name {words!r}: {info.value}"


@pytest.mark.parametrize("name, value", [("MMLAB_SEED", "abc"), ("MMLAB_SEED", "-2"), ("MMLAB_THREADS", "0")])
def test_bad_environment_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        settings.seed() if name == "MMLAB_SEED" else settings.set_threads()
