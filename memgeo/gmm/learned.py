"""A small learned score for a mixture: a noise-conditional MLP denoiser trained in seconds.

It lets a figure compare the closed-form geometry with what a *learned* score gives, on the same
mixture (Brokman et al., SSVM 2025, section on Gaussian mixtures). VE noise: ``x = x_0 + sigma eps``;
the network predicts ``eps`` from ``(x, log sigma)``, and the score is ``-eps_hat / sigma``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_int, check_positive
from .mixture import GaussianMixture

__all__ = ["LearnedScore", "train_mlp_score"]


class _MLP(torch.nn.Module):
    def __init__(self, dim: int, width: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, width), torch.nn.SiLU(),
            torch.nn.Linear(width, width), torch.nn.SiLU(),
            torch.nn.Linear(width, width), torch.nn.SiLU(),
            torch.nn.Linear(width, dim),
        )

    def forward(self, x, log_sigma):
        return self.net(torch.cat([x, log_sigma.expand(x.shape[0], 1)], -1))


@dataclass
class LearnedScore:
    """A trained noise-conditional score; ``field(sigma)`` is the score of ``p_sigma`` as a batched callable."""

    network: torch.nn.Module
    dtype: torch.dtype
    final_loss: float

    def eps(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        ls = torch.tensor([[math.log(sigma)]], dtype=torch.float32)
        return self.network(x.float(), ls).to(self.dtype)

    def field(self, sigma: float):
        check_positive("sigma", sigma)
        return lambda x: -self.eps(x, sigma) / sigma


def train_mlp_score(
    mixture: GaussianMixture,
    *,
    sigma_range: tuple[float, float] = (0.1, 2.0),
    steps: int = 3000,
    batch_size: int = 512,
    width: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> LearnedScore:
    """Train an MLP ``eps(x, log sigma)`` by denoising score matching on fresh samples of ``mixture``,
    with sigma log-uniform in ``sigma_range``."""
    steps = check_int("steps", steps)
    lo, hi = (check_positive("sigma_range", s) for s in sigma_range)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # seeded initialization without touching the caller's global RNG
        torch.manual_seed(seed)
        net = _MLP(mixture.dim, width).float()  # float32 whatever the default dtype
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        x0 = mixture.sample(batch_size, generator=gen).float()
        log_s = math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(batch_size, 1, generator=gen, dtype=torch.float32)
        eps = torch.randn(x0.shape, generator=gen, dtype=torch.float32)
        x = x0 + log_s.exp() * eps
        pred = net(x, log_s)
        loss = ((pred - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval().requires_grad_(False)
    return LearnedScore(net, mixture.dtype, float(loss.detach()))
