"""The one training loop every notebook uses: a fixed number of steps, a progress bar, periodic evaluation.

Training is by step count, not wall clock, so a re-run with the same seed reproduces the same figures;
the seconds taken are recorded beside the steps for the budgets the notebooks assert.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from mmlab.settings import SMOKE_STEPS, clock, smoke

READ_EVERY = 25  # training steps between reading the losses back to the host (each read waits for the device)


@dataclass
class History:
    """What a training run recorded.

    Attributes:
        steps, losses: the step index and training loss of every step.
        evals: ``(step, metrics)`` for each evaluation (``metrics`` is the dict ``eval_fn`` returned).
        seconds: wall-clock seconds spent training (evaluation excluded).
    """

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"steps": self.steps, "losses": self.losses, "evals": self.evals, "seconds": self.seconds})

    @classmethod
    def from_json(cls, text: str) -> History:
        d = json.loads(text)
        return cls(d["steps"], d["losses"], [(int(s), m) for s, m in d["evals"]], float(d["seconds"]))

    def metric(self, name: str) -> tuple[list[int], list[float]]:
        """The steps and values of one evaluation metric, for plotting."""
        pts = [(s, m[name]) for s, m in self.evals if name in m]
        if not pts:
            raise KeyError(f"no evaluation recorded metric {name!r}; have {sorted({k for _, m in self.evals for k in m})}")
        return [s for s, _ in pts], [v for _, v in pts]


def train(
    model: torch.nn.Module,
    batch_fn: Callable[[int], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    num_steps: int,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int = 100,
    lr_scheduler: Any | None = None,
    max_grad_norm: float | None = None,
    after_step: Callable[[int], None] | None = None,
    progress: bool = True,
    desc: str = "train",
    seed: int | None = None,
) -> History:
    """Train ``model`` for ``num_steps`` optimizer steps.

    Each step: ``batch = batch_fn(step)``; ``loss = loss_fn(model, batch)``; backward; optional gradient
    clipping; ``optimizer.step()``; ``lr_scheduler.step()``; ``after_step(step)`` (e.g. an EMA update).
    ``eval_fn(model)`` runs in ``eval()`` mode under ``torch.no_grad()`` every ``eval_every`` steps and after the last.

    Args:
        model: the module to train (put in ``train()`` mode for each step).
        batch_fn: step index -> batch; make it deterministic in the step (e.g. seed = step).
        loss_fn: (model, batch) -> scalar loss tensor.
        optimizer: over the parameters that should train.
        num_steps: number of steps (> 0).
        eval_fn: model -> dict of metric name -> float.
        eval_every: steps between evaluations (> 0).
        seed: seeds torch's global RNG for the run (dropout, sampling inside ``loss_fn``) without changing it for the
            caller (``torch.random.fork_rng``); None leaves the RNG as it is.
    Batches are moved to the model's device (tensors, and tensors inside dicts, lists and tuples), so ``batch_fn`` can
    build them on the CPU. The losses stay on the device and are read back every :data:`READ_EVERY` steps and before
    each evaluation (a GPU then never waits for the host in between); a non-finite loss raises ``FloatingPointError``
    naming its step at that read. Seconds are read with :func:`mmlab.settings.clock` (the device synchronized).
    In a smoke run (``MMLAB_SMOKE=1``) training stops after ``SMOKE_STEPS`` steps.
    Returns:
        A :class:`History`.
    """
    if not isinstance(num_steps, int) or num_steps <= 0:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not isinstance(eval_every, int) or eval_every <= 0:
        raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return train(model, batch_fn, loss_fn, optimizer, num_steps, eval_fn, eval_every, lr_scheduler,
                         max_grad_norm, after_step, progress, desc)
    if smoke():
        num_steps = min(num_steps, SMOKE_STEPS)
    device = next(model.parameters()).device
    history = History()
    pending: list[torch.Tensor] = []  # losses not yet read back: one host sync per READ_EVERY steps, not per step
    started = clock(device)

    def read_back() -> None:
        """Copy the pending losses to the host (one sync), stop at a non-finite one, add the seconds since ``started``."""
        if pending:
            values = torch.stack(pending).tolist()
            for i, value in enumerate(values):
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss became {value} at step {history.steps[len(history.losses) + i]}")
            history.losses.extend(values)
            pending.clear()
        history.seconds += clock(device) - started

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in eval_fn(model).items()}
        history.evals.append((step, metrics))
        bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()}, refresh=False)

    bar = tqdm(range(num_steps), desc=desc, disable=not progress, mininterval=10.0)  # few updates: small stored outputs
    for step in bar:
        model.train()
        batch = to_device(batch_fn(step), device)
        loss = loss_fn(model, batch)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar tensor, got shape {tuple(loss.shape)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        if after_step is not None:
            after_step(step)
        history.steps.append(step)
        pending.append(loss.detach())
        evaluating = eval_fn is not None and ((step + 1) % eval_every == 0 or step + 1 == num_steps)
        if evaluating or len(pending) == READ_EVERY or step + 1 == num_steps:
            read_back()
            if evaluating:
                evaluate(step + 1)
            started = clock(device)
    bar.close()
    model.eval()
    return history


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (also inside dicts, lists and tuples) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class BatchStore:
    """``batch_fn(step)`` made once per step and kept on disk, for several trainings on the same batches.

    When models train on the same batches of frozen features (notebook 04's three VQA-style models read the same
    tiny-CLIP regions of the same scenes), the first training makes each batch and the later ones read it back:
    the same float32 bytes (safetensors), so every training is exactly what it would be on freshly made batches,
    and a batch costs ~1 MB of disk instead of memory. ``batch_fn`` returns a dict of tensors. Files are written
    whole (temporary file + rename) into a temporary folder that is deleted with the store or at exit.
    """

    def __init__(self, batch_fn: Callable[[int], dict[str, torch.Tensor]], directory: str | Path | None = None) -> None:
        self.batch_fn = batch_fn
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="mmlab-batches-")
        self.directory = Path(directory if directory is not None else self._tmp.name)
        self.made = self.read = 0

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        path = self.directory / f"{step}.safetensors"
        if path.exists():
            self.read += 1
            return load_file(path)
        batch = self.batch_fn(step)
        if not isinstance(batch, dict) or not all(isinstance(v, torch.Tensor) for v in batch.values()):
            raise TypeError(f"batch_fn must return a dict of tensors, got {type(batch).__name__}")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in batch.items()}, tmp)
        os.replace(tmp, path)
        self.made += 1
        return batch

    def __repr__(self) -> str:
        return f"BatchStore({self.directory}, made={self.made}, read={self.read})"


def warmup_cosine(optimizer: torch.optim.Optimizer, num_steps: int, warmup: int = 50) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning-rate factor rising linearly over ``warmup`` steps, then cosine decay to 0 at ``num_steps``.

    Step ``s`` gets ``min(1, (s + 1) / warmup) * (1 + cos(pi * min(1, s / num_steps))) / 2`` times the base rate
    (the schedule of CLIP, BLIP-2 and most transformer recipes). Not ``transformers.get_cosine_schedule_with_warmup``,
    which warms up first and then decays over the remaining steps: a different curve, so switching would retrain every
    model behind the seed tables; this one is the one line above.
    """
    if not isinstance(num_steps, int) or num_steps <= 0:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not isinstance(warmup, int) or warmup <= 0:
        raise ValueError(f"warmup must be a positive int, got {warmup!r}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / num_steps))))


def count_parameters(params: torch.nn.Module | Iterable[torch.Tensor]) -> int:
    """How many numbers a module (or an iterable of its tensors, e.g. only the trainable ones) holds."""
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    return sum(p.numel() for p in params)
