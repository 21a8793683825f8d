import time

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from mmlab.ddpm import NoiseSchedule, classifier_free_guidance, ddim_step, ddpm_step, sample

SCHEDULES = ["linear", "squaredcos_cap_v2", "scaled_linear"]


def _pair(kind, cls=DDPMScheduler, **kw):
    ours = NoiseSchedule(1000, kind, beta_start=1e-4 if kind != "scaled_linear" else 0.00085,
                         beta_end=0.02 if kind != "scaled_linear" else 0.012)
    ref = cls(num_train_timesteps=1000, beta_schedule=kind, beta_start=ours_start(kind), beta_end=ours_end(kind),
              clip_sample=False, **kw)
    return ours, ref


def ours_start(kind):
    return 1e-4 if kind != "scaled_linear" else 0.00085


def ours_end(kind):
    return 0.02 if kind != "scaled_linear" else 0.012


@pytest.mark.parametrize("kind", SCHEDULES)
def test_schedule_equals_diffusers(kind):
    ours, ref = _pair(kind)
    assert torch.equal(ours.betas, ref.betas) and torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_q_sample_equals_add_noise(kind):
    ours, ref = _pair(kind)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 500, 999])
    torch.testing.assert_close(ours.q_sample(x0, t, noise), ref.add_noise(x0, noise, t), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", SCHEDULES[:2])
@pytest.mark.parametrize("t", [0, 1, 37, 500, 999])
def test_ddpm_step_equals_diffusers(kind, t):
    ours, ref = _pair(kind)
    g = torch.Generator().manual_seed(t)
    x_t, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    a = ddpm_step(ours, eps, t, x_t, generator=torch.Generator().manual_seed(7))
    b = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", SCHEDULES[:2])
@pytest.mark.parametrize("steps", [50, 10])
def test_ddim_step_equals_diffusers(kind, steps):
    ours, ref = _pair(kind, DDIMScheduler, set_alpha_to_one=True)
    ref.set_timesteps(steps)
    timesteps = ours.timesteps(steps)
    assert timesteps == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(1)
    for i in [0, 1, len(timesteps) - 1]:  # includes the first step (t near T-1) and the last (prev_t = -1)
        t = timesteps[i]
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x_t, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
        torch.testing.assert_close(ddim_step(ours, eps, t, prev_t, x_t), ref.step(eps, t, x_t).prev_sample,
                                   rtol=1e-5, atol=1e-5)
    # t = T-1 directly, as the spec asks for
    x_t, eps = torch.randn(1, 1, 4, 4, generator=g), torch.randn(1, 1, 4, 4, generator=g)
    ref2 = DDIMScheduler(num_train_timesteps=1000, beta_schedule=kind, clip_sample=False, set_alpha_to_one=True)
    ref2.set_timesteps(1000)
    torch.testing.assert_close(ddim_step(ours, eps, 999, 998, x_t), ref2.step(eps, 999, x_t).prev_sample)


class _TinyEps(torch.nn.Module):
    """A fixed random conv net standing in for a denoiser."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t):
        return torch.tanh(self.conv(x)) * (1 + t / 1000)


def _diffusers_loop(model, scheduler, steps, shape, generator):
    scheduler.set_timesteps(steps)
    x = torch.randn(shape, generator=generator)
    for t in scheduler.timesteps:
        with torch.no_grad():
            eps = model(x, int(t))
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("sampler, cls, steps", [("ddpm", DDPMScheduler, 1000), ("ddpm", DDPMScheduler, 20),
                                                 ("ddim", DDIMScheduler, 50)])
def test_sample_equals_diffusers_loop(sampler, cls, steps):
    model = _TinyEps()
    ours = NoiseSchedule(1000, "linear")
    ref = cls(num_train_timesteps=1000, clip_sample=False)
    a = sample(model, (2, 3, 8, 8), ours, steps, sampler, generator=torch.Generator().manual_seed(3), progress=False)
    b = _diffusers_loop(model, ref, steps, (2, 3, 8, 8), torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_sampling_loop_not_slower_than_diffusers():
    model = _TinyEps()
    ours, ref = NoiseSchedule(1000, "linear"), DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    timings = {"ours": [], "diffusers": []}
    for _ in range(3):  # interleaved repeats; best of three
        t0 = time.perf_counter()
        sample(model, (4, 3, 8, 8), ours, 250, "ddpm", generator=torch.Generator().manual_seed(0), progress=False)
        timings["ours"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _diffusers_loop(model, ref, 250, (4, 3, 8, 8), torch.Generator().manual_seed(0))
        timings["diffusers"].append(time.perf_counter() - t0)
    assert min(timings["ours"]) <= min(timings["diffusers"]) * 1.05, timings


def test_guidance_and_errors():
    u, c = torch.zeros(2), torch.ones(2)
    assert torch.equal(classifier_free_guidance(u, c, 0.0), u) and torch.equal(classifier_free_guidance(u, c, 1.0), c)
    assert torch.equal(classifier_free_guidance(u, c, 3.0), 3 * c)
    s = NoiseSchedule()
    with pytest.raises(ValueError, match="beta_schedule must be one of"):
        NoiseSchedule(beta_schedule="cosine")
    with pytest.raises(ValueError, match=r"t must lie in \[0, 999\]"):
        s.q_sample(torch.zeros(1, 1), torch.tensor([1000]), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="noise must be shaped like x0"):
        s.q_sample(torch.zeros(2, 1), 3, torch.zeros(1, 1))
    with pytest.raises(ValueError, match="model_output must be shaped like x_t"):
        ddpm_step(s, torch.zeros(1, 2), 5, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="prev_t must satisfy"):
        ddim_step(s, torch.zeros(1), 5, 7, torch.zeros(1))
    with pytest.raises(ValueError, match="sampler must be"):
        sample(lambda x, t: x, (1, 1), s, 10, sampler="plms")
    with pytest.raises(ValueError, match="needs uncond_model"):
        sample(lambda x, t: x, (1, 1), s, 10, guidance_scale=2.0)
    with pytest.raises(ValueError, match="num_inference_steps must be"):
        s.timesteps(0)
