import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from torch.utils._python_dispatch import TorchDispatchMode

from mmlab.ddpm import (
    NoiseSchedule,
    classifier_free_guidance,
    ddim_step,
    ddpm_step,
    flow_matching_sigmas,
    flow_matching_step,
    predicted_x0_and_eps,
    sample,
)

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


class _CountOps(TorchDispatchMode):
    """Counts the tensor operations (aten calls) issued inside the `with` block."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sampler, cls, steps", [("ddpm", DDPMScheduler, 250), ("ddim", DDIMScheduler, 50)])
def test_sampling_loop_does_no_more_work_than_diffusers(sampler, cls, steps):
    # The loop's own work, counted rather than timed (a wall-clock bar flaked on 2 cores): with a stand-in eps that
    # costs nothing, every aten call in the block belongs to the loop. Here ours issues ~39 per DDPM step against
    # diffusers' ~62, and ~21 per DDIM step against ~36.
    eps = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    calls = {"ours": 0, "diffusers": 0}

    def stand_in(name):
        def eps_fn(x, t):
            calls[name] += 1
            return eps
        return eps_fn

    ours, ref = NoiseSchedule(1000, "linear"), cls(num_train_timesteps=1000, clip_sample=False)
    with _CountOps() as ops_ours:
        sample(stand_in("ours"), (4, 3, 8, 8), ours, steps, sampler, generator=torch.Generator().manual_seed(0),
               progress=False)
    with _CountOps() as ops_ref:
        _diffusers_loop(stand_in("diffusers"), ref, steps, (4, 3, 8, 8), torch.Generator().manual_seed(0))
    assert calls == {"ours": steps, "diffusers": steps}, calls
    assert ops_ours.count <= ops_ref.count, (ops_ours.count, ops_ref.count)


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


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("t", [0, 1, 500, 999])
def test_steps_equal_diffusers_for_every_prediction_type(prediction_type, t):
    ours, ref = _pair("linear", prediction_type=prediction_type)
    g = torch.Generator().manual_seed(t + 11)
    x_t, out = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    a = ddpm_step(ours, out, t, x_t, generator=torch.Generator().manual_seed(3), prediction_type=prediction_type)
    b = ref.step(out, t, x_t, generator=torch.Generator().manual_seed(3)).prev_sample
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    _, ref_ddim = _pair("linear", DDIMScheduler, set_alpha_to_one=True, prediction_type=prediction_type)
    ref_ddim.set_timesteps(50)
    t_grid = {0: 0, 1: 20, 500: 500, 999: 980}[t]  # DDIM's 50-step grid: 980, 960, ..., 0
    prev_t = t_grid - 20 if t_grid >= 20 else -1
    torch.testing.assert_close(ddim_step(ours, out, t_grid, prev_t, x_t, prediction_type=prediction_type),
                               ref_ddim.step(out, t_grid, x_t).prev_sample, rtol=1e-5, atol=1e-5)


def test_prediction_types_agree_on_the_same_truth():
    ours = NoiseSchedule(1000, "linear")
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)
    a = ours.alphas_cumprod[300]
    x_t = ours.q_sample(x0, 300, eps)
    v = a**0.5 * eps - (1 - a) ** 0.5 * x0
    for kind, out in (("epsilon", eps), ("v_prediction", v), ("sample", x0)):
        x0_hat, eps_hat = predicted_x0_and_eps(a, out, x_t, kind)
        torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prediction_type"):
        predicted_x0_and_eps(a, eps, x_t, "velocity")


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 10, 28])
def test_flow_matching_equals_diffusers(shift, steps):
    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    ref.set_timesteps(steps)
    sigmas = flow_matching_sigmas(steps, shift=shift)
    assert torch.equal(sigmas, ref.sigmas)
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(2, 1, 8, 8, generator=g)
    ours = x.clone()
    for i, t in enumerate(ref.timesteps):
        v = torch.randn(2, 1, 8, 8, generator=g)
        x = ref.step(v, t, x).prev_sample
        ours = flow_matching_step(v, sigmas[i], sigmas[i + 1], ours)
    assert torch.equal(ours, x)


def test_flow_matching_errors():
    with pytest.raises(ValueError, match="num_inference_steps"):
        flow_matching_sigmas(0)
    with pytest.raises(ValueError, match="shift"):
        flow_matching_sigmas(10, shift=0.0)
    with pytest.raises(ValueError, match="model_output"):
        flow_matching_step(torch.zeros(2, 3), 1.0, 0.5, torch.zeros(3, 2))
