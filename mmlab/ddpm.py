"""DDPM and DDIM written to be read next to the papers, model-agnostic, and equal to diffusers.

* DDPM (Ho et al. 2020): forward process q(x_t | x_0) (eq. 4), ancestral step from the ε-prediction
  (eq. 11 with the posterior variance β̃_t of eq. 7), the simple loss (eq. 14).
* DDIM (Song et al. 2021): the deterministic (η = 0) step of eq. 12.

The schedule knows nothing about the denoiser: :func:`sample` runs the visible loop
"predict ε -> step -> repeat", drawing x_T and each step's noise from one generator in the same order as
diffusers' pipelines, so the same seed gives the same images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from mmlab.settings import device as runtime_device

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


class NoiseSchedule:
    """The variance schedule β_1..β_T and its cumulative products ᾱ_t (diffusers' names and dtypes).

    Args:
        num_train_timesteps: T (timesteps are 0 .. T-1).
        beta_schedule: "linear" (DDPM), "scaled_linear" (Stable Diffusion: linear in √β) or
            "squaredcos_cap_v2" (Nichol & Dhariwal 2021 cosine schedule, β capped at 0.999).
        beta_start, beta_end: first and last β for the linear schedules.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be an int >= 2, got {num_train_timesteps!r}")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
        if not 0 < beta_start < beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
        T = num_train_timesteps
        if beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
        else:
            def alpha_bar(t: float) -> float:
                return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)],
                                 dtype=torch.float32)
        self.num_train_timesteps = T
        self.beta_schedule = beta_schedule
        self.betas = betas  # (T,)
        self.alphas = 1.0 - betas  # (T,)
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # (T,)  ᾱ_t

    def __repr__(self) -> str:
        return f"NoiseSchedule(num_train_timesteps={self.num_train_timesteps}, beta_schedule={self.beta_schedule!r})"

    def _check_t(self, t: torch.Tensor | int, name: str = "t") -> None:
        """A ValueError naming ``t`` when it is not a training timestep. Checked for ints and CPU tensors; a tensor on
        a GPU is not read back to the host for this (a sync per training step): an out-of-range index fails there
        when it is gathered."""
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            return
        tt = torch.as_tensor(t)
        if tt.numel() and (tt.min() < 0 or tt.max() >= self.num_train_timesteps):
            raise ValueError(f"{name} must lie in [0, {self.num_train_timesteps - 1}], got {tt.tolist()}")

    def alphas_cumprod_on(self, device: torch.device) -> torch.Tensor:
        """ᾱ on ``device``, copied there once (not on every call of a training step)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.alphas_cumprod
        copies = self.__dict__.setdefault("_alphas_cumprod_copies", {})
        if device not in copies:
            copies[device] = self.alphas_cumprod.to(device)
        return copies[device]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """Forward process, DDPM eq. 4: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε  (diffusers' ``add_noise``).

        Args:
            x0: clean samples (B, ...).
            t: timesteps, an int or a (B,) long tensor.
            noise: ε ~ N(0, I), shaped like ``x0``.
        Returns:
            x_t shaped like ``x0``.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise must be shaped like x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        self._check_t(t)
        t = torch.as_tensor(t, device=x0.device).long()
        a = self.alphas_cumprod_on(x0.device)[t].to(x0.dtype)
        a = a.reshape(a.shape + (1,) * (x0.ndim - a.ndim))  # broadcast over (C, H, W)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def snr(self, t: torch.Tensor | int) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) of x_t."""
        self._check_t(t)
        t = torch.as_tensor(t)
        a = self.alphas_cumprod_on(t.device)[t.long()]  # on t's device, as q_sample is on x0's
        return a / (1 - a)

    def timesteps(self, num_inference_steps: int) -> list[int]:
        """Inference timesteps, descending, spaced as diffusers' default ("leading"): T//n * [n-1, ..., 0]."""
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be an int in [1, {self.num_train_timesteps}], got {num_inference_steps!r}")
        ratio = self.num_train_timesteps // num_inference_steps
        return [i * ratio for i in range(num_inference_steps - 1, -1, -1)]


def _alpha_prev(schedule: NoiseSchedule, prev_t: int) -> torch.Tensor:
    return schedule.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def predicted_x0_and_eps(a_t: torch.Tensor, model_output: torch.Tensor, x_t: torch.Tensor,
                         prediction_type: str = "epsilon") -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε̂) from what the network predicts, given ᾱ_t and x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (diffusers' formulas).

    "epsilon": ε (DDPM, SD 1.x); "v_prediction": v = √ᾱ_t ε − √(1-ᾱ_t) x_0 (Salimans & Ho 2022; SD 2.x at 768 px);
    "sample": x_0 itself.
    """
    if prediction_type == "epsilon":
        return (x_t - (1 - a_t) ** 0.5 * model_output) / a_t**0.5, model_output
    if prediction_type == "v_prediction":
        return a_t**0.5 * x_t - (1 - a_t) ** 0.5 * model_output, a_t**0.5 * model_output + (1 - a_t) ** 0.5 * x_t
    if prediction_type == "sample":
        return model_output, (x_t - a_t**0.5 * model_output) / (1 - a_t) ** 0.5
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def _check_step(schedule: NoiseSchedule, model_output: torch.Tensor, t: int, prev_t: int, x_t: torch.Tensor) -> None:
    """ε shaped like x_t, t a training timestep, -1 <= prev_t < t: else a ValueError naming the argument."""
    if model_output.shape != x_t.shape:
        raise ValueError(f"model_output must be shaped like x_t {tuple(x_t.shape)}, got {tuple(model_output.shape)}")
    schedule._check_t(t)
    if not -1 <= prev_t < t:
        raise ValueError(f"prev_t must satisfy -1 <= prev_t < t={t}, got {prev_t}")


def ddpm_step(schedule: NoiseSchedule, model_output: torch.Tensor, t: int, x_t: torch.Tensor,
              generator: torch.Generator | None = None, prev_t: int | None = None,
              prediction_type: str = "epsilon") -> torch.Tensor:
    """One ancestral DDPM step x_t -> x_{t-1} from the ε-prediction (Ho et al. 2020, eqs. 7 and 11).

    x̂_0 = (x_t - √(1-ᾱ_t) ε_θ) / √ᾱ_t;  μ̃ = √ᾱ_prev β_t / (1-ᾱ_t) x̂_0 + √α_t (1-ᾱ_prev) / (1-ᾱ_t) x_t;
    x_{t-1} = μ̃ + σ_t z with σ_t² = β̃_t = (1-ᾱ_prev) / (1-ᾱ_t) β_t and z ~ N(0, I) (no noise at t = 0).
    Equal to ``DDPMScheduler(clip_sample=False).step(model_output, t, x_t, generator).prev_sample``.

    Args:
        model_output: ε_θ(x_t, t), shaped like ``x_t`` (B, C, H, W).
        t: current timestep (int).
        x_t: current sample.
        generator: source of z (drawn only when t > 0).
        prev_t: previous timestep (default t - 1; smaller for strided sampling, -1 means ᾱ_prev = 1).
        prediction_type: what ``model_output`` is: "epsilon", "v_prediction" or "sample" (see predicted_x0_and_eps).
    """
    t = int(t)
    prev_t = t - 1 if prev_t is None else int(prev_t)
    _check_step(schedule, model_output, t, prev_t, x_t)
    a_t = schedule.alphas_cumprod[t]
    a_prev = _alpha_prev(schedule, prev_t)
    beta_t = 1 - a_t / a_prev  # β_t (of the possibly strided step)
    x0_pred, _ = predicted_x0_and_eps(a_t, model_output, x_t, prediction_type)  # for ε: eq. 15 rearranged
    mean = (a_prev**0.5 * beta_t / (1 - a_t)) * x0_pred + ((1 - beta_t) ** 0.5 * (1 - a_prev) / (1 - a_t)) * x_t
    if t == 0:
        return mean
    variance = torch.clamp((1 - a_prev) / (1 - a_t) * beta_t, min=1e-20)  # β̃_t
    z = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=generator.device if generator else x_t.device)
    return mean + variance**0.5 * z.to(x_t.device)


def ddim_step(schedule: NoiseSchedule, model_output: torch.Tensor, t: int, prev_t: int, x_t: torch.Tensor,
              prediction_type: str = "epsilon") -> torch.Tensor:
    """One deterministic DDIM step (η = 0, Song et al. 2021 eq. 12).

    x_prev = √ᾱ_prev x̂_0 + √(1-ᾱ_prev) ε_θ, with x̂_0 = (x_t - √(1-ᾱ_t) ε_θ) / √ᾱ_t; ``prev_t = -1`` means
    ᾱ_prev = 1. Equal to ``DDIMScheduler(clip_sample=False, set_alpha_to_one=True).step(...).prev_sample``;
    ``prediction_type`` as in :func:`ddpm_step`.
    """
    t, prev_t = int(t), int(prev_t)
    _check_step(schedule, model_output, t, prev_t, x_t)
    a_t = schedule.alphas_cumprod[t]
    a_prev = _alpha_prev(schedule, prev_t)
    x0_pred, eps = predicted_x0_and_eps(a_t, model_output, x_t, prediction_type)  # x̂_0 and ε̂
    return a_prev**0.5 * x0_pred + (1 - a_prev) ** 0.5 * eps  # x_0 term + "direction pointing to x_t"


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """ε̃ = ε_uncond + s (ε_cond - ε_uncond) (Ho & Salimans 2022): s = 0 unconditional, 1 conditional, > 1 guided."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def _module_device(model) -> torch.device | None:
    """The device of a ``torch.nn.Module``'s first parameter; None for a plain function (e.g. a lambda over one)."""
    if isinstance(model, torch.nn.Module):
        return next((p.device for p in model.parameters()), None)
    return None


def sample(
    model: Callable[[torch.Tensor, int], torch.Tensor],
    shape: tuple[int, ...],
    schedule: NoiseSchedule,
    num_inference_steps: int,
    sampler: str = "ddpm",
    generator: torch.Generator | None = None,
    guidance_scale: float | None = None,
    uncond_model: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    device: torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Sample x_0 by the reverse process: x_T ~ N(0, I), then predict ε -> step, for each timestep.

    Args:
        model: ``model(x_t, t) -> ε`` (the conditional model when guiding).
        shape: (B, C, H, W) of the samples.
        num_inference_steps: number of steps (timesteps spaced as diffusers' "leading").
        sampler: "ddpm" (ancestral, stochastic) or "ddim" (η = 0, deterministic after x_T).
        generator: draws x_T and then each DDPM step's noise, in diffusers' order.
        guidance_scale: if given, classifier-free guidance with ``uncond_model(x_t, t)``.
        device: where x_t lives; default: the model's device (a ``torch.nn.Module``'s parameters), else
            ``settings.device()``. The noise is drawn on the generator's device and then moved here, so a seed gives
            the same samples on every device.
    Returns:
        x_0 samples, float32 (B, C, H, W).
    """
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
    if guidance_scale is not None and uncond_model is None:
        raise ValueError("guidance_scale needs uncond_model (the unconditional ε prediction)")
    timesteps = schedule.timesteps(num_inference_steps)
    device = device or _module_device(model) or runtime_device()
    gen_device = generator.device if generator is not None else device
    x_t = torch.randn(shape, generator=generator, device=gen_device).to(device)  # x_T
    for i, t in enumerate(tqdm(timesteps, desc=sampler, disable=not progress, mininterval=10.0)):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        with torch.no_grad():
            eps = model(x_t, t)  # (B, C, H, W)
            if guidance_scale is not None:
                eps = classifier_free_guidance(uncond_model(x_t, t), eps, guidance_scale)
        if sampler == "ddpm":
            x_t = ddpm_step(schedule, eps, t, x_t, generator=generator, prev_t=prev_t)
        else:
            x_t = ddim_step(schedule, eps, t, prev_t, x_t)
    return x_t


def flow_matching_sigmas(num_inference_steps: int, num_train_timesteps: int = 1000, shift: float = 1.0) -> torch.Tensor:
    """σ_1 > ... > σ_N, then 0: the noise levels of a rectified-flow sampler, as diffusers'
    ``FlowMatchEulerDiscreteScheduler(num_train_timesteps, shift).set_timesteps(num_inference_steps).sigmas``.

    Rectified flow (SD3) puts x_σ = (1 − σ) x_0 + σ ε on a straight line from data (σ = 0) to noise (σ = 1); ``shift``
    > 1 spends more steps at high noise (SD3 uses 3.0). The timestep the network is told is σ · num_train_timesteps.
    """
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    T = num_train_timesteps
    train = torch.from_numpy(np.linspace(1, T, T, dtype=np.float32)[::-1].copy()) / T  # the training levels
    train = shift * train / (1 + (shift - 1) * train)
    sigmas = np.linspace(train[0].item() * T, train[-1].item() * T, num_inference_steps) / T
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return torch.cat([torch.from_numpy(sigmas).to(torch.float32), torch.zeros(1)])


def flow_matching_step(model_output: torch.Tensor, sigma: float | torch.Tensor, sigma_next: float | torch.Tensor,
                       x_t: torch.Tensor) -> torch.Tensor:
    """One Euler step along the predicted velocity v = ε − x_0: x_next = x_σ + (σ_next − σ) v.

    Equal to ``FlowMatchEulerDiscreteScheduler.step(model_output, t, x_t).prev_sample`` (its default, deterministic).
    """
    if model_output.shape != x_t.shape:
        raise ValueError(f"model_output must be shaped like x_t {tuple(x_t.shape)}, got {tuple(model_output.shape)}")
    dt = torch.as_tensor(sigma_next, dtype=torch.float32) - torch.as_tensor(sigma, dtype=torch.float32)  # < 0
    return (x_t.float() + dt.to(x_t.device) * model_output).to(model_output.dtype)
