# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # p-Laplace analysis on a 2-D mixture (Brokman et al., SSVM 2025)
#
# The three-mode equilateral-triangle mixture (side 5, covariance 0.1 I, equal weights), noised
# with sigma. Top: closed-form maps of log p_sigma, |s|, and the p-Laplacians for p = 1, 2 and the
# normalized infinity-Laplacian. Bottom: the numerical estimator (antithetic boundary flux, from
# the score alone) at the modes, the edge midpoints and the centroid, from the analytic score and
# from a small learned score (an MLP denoiser trained in seconds by `memgeo.gmm.train_mlp_score`).

# %%
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from memgeo.geometry import p_laplacian, p_laplacian_from_derivatives
from memgeo.gmm import GaussianMixture, train_mlp_score

FAST = os.environ.get("MEMGEO_FAST") == "1"
FIG = os.environ.get("MEMGEO_FIGURE_DIR", "figures")
os.makedirs(FIG, exist_ok=True)

side = 5.0
h = side * math.sqrt(3) / 2
means = torch.tensor([[-side / 2, -h / 3], [side / 2, -h / 3], [0.0, 2 * h / 3]], dtype=torch.float64)
mix = GaussianMixture(torch.full((3,), 1 / 3), means, torch.full((3,), 0.1))
sigmas = [0.3, 0.8, 1.5]

# %%
n = 70 if FAST else 220
u = torch.linspace(-4.5, 4.5, n, dtype=torch.float64)
X, Y = torch.meshgrid(u, u, indexing="xy")
pts = torch.stack([X.flatten(), Y.flatten()], -1)
cols = ["log p", "|s|", "p = 1", "p = 2", "p = inf (normalized)"]
fig, axes = plt.subplots(len(sigmas), len(cols), figsize=(3.1 * len(cols), 2.8 * len(sigmas)))
for i, sigma in enumerate(sigmas):
    law = mix.noised(1.0, sigma)
    s, H = law.score_and_hessian(pts)
    maps = [law.log_prob(pts), s.norm(dim=-1)] + [p_laplacian_from_derivatives(s, H, p) for p in (1, 2, "inf")]
    for j, (m, name) in enumerate(zip(maps, cols)):
        ax = axes[i, j]
        v = m.reshape(n, n).numpy()
        lim = None if j < 2 else float(torch.quantile(m.abs(), 0.98))
        im = ax.imshow(v, origin="lower", extent=[-4.5, 4.5, -4.5, 4.5], cmap="viridis" if j < 2 else "RdBu_r",
                       vmin=None if lim is None else -lim, vmax=lim)
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(f"{name}, sigma = {sigma}", fontsize=9)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
fig.tight_layout()
fig.savefig(f"{FIG}/fig1_p_laplace_maps.png", dpi=110)

# %%
learned = train_mlp_score(mix, steps=400 if FAST else 4000, seed=0)
sigma = 0.8
law = mix.noised(1.0, sigma)
places = {
    "modes": means,
    "midpoints": torch.stack([(means[0] + means[1]) / 2, (means[1] + means[2]) / 2, (means[0] + means[2]) / 2]),
    "centroid": means.mean(0, keepdim=True),
}
R = 120 if FAST else 900
rho = 0.3  # points on circles of radius rho around each place: Delta_1 is singular where s = 0 itself
g = torch.Generator().manual_seed(1)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, (label, field) in zip(axes, [("analytic score", law.score), ("learned score (MLP)", learned.field(sigma))]):
    for name, x in places.items():
        theta = 2 * math.pi * torch.rand(R, generator=g, dtype=torch.float64)
        xs = x.repeat_interleave(R // len(x), 0)[:R]
        xs = xs + rho * torch.stack([theta[: len(xs)].cos(), theta[: len(xs)].sin()], -1)
        est = p_laplacian(field, xs, 1, method="flux_antithetic", n_probes=8, radius=0.05,
                          generator=torch.Generator().manual_seed(0))
        exact = p_laplacian_from_derivatives(*law.score_and_hessian(xs), 1)
        ax.hist(est.value.numpy(), bins=40, alpha=0.6, label=f"{name} (closed-form median {exact.median():.2f})")
    ax.set_title(f"Delta_1 log p within {rho} of each place, sigma = {sigma}: {label}", fontsize=9)
    ax.set_xlabel("estimate (antithetic flux, 8 directions, r = 0.05)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(f"{FIG}/fig1_p_laplace_estimates.png", dpi=110)
print(f"learned score: final denoising loss {learned.final_loss:.3f}")
