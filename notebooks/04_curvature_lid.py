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
# # Curvature and intrinsic dimension near memorized and generalizing modes
#
# On the canonical memorization mixture, at points a distance 0.5 sigma_t from a mode of a memorized
# and of a generalizing condition (scaled by alpha_t): the largest principal curvature of the level
# set of log p_t(x | c) and the FLIPD local intrinsic dimension, against the noise level. Closed
# forms (lines) beside estimates from the score alone (markers: Lanczos on JVPs for the curvature,
# Hutchinson for FLIPD, with standard errors).

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from memgeo.geometry import flipd, flipd_from_derivatives, principal_curvatures, principal_curvatures_from_derivatives
from memgeo.gmm import ConditionalGaussianMixture

FAST = os.environ.get("MEMGEO_FAST") == "1"
FIG = os.environ.get("MEMGEO_FIGURE_DIR", "figures")
os.makedirs(FIG, exist_ok=True)
mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=1, n_generalizing=1, seed=0)
ts = [int(t) for t in mix.timesteps(10 if FAST else 40)][::-1]  # ascending noise
sig = np.array([float(mix.sigma(t)) for t in ts])
g = torch.Generator().manual_seed(0)
u = torch.randn(1, mix.dim, generator=g, dtype=torch.float64)
u = u / u.norm()

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for c, (name, color) in enumerate((("memorized", "C3"), ("generalizing", "C0"))):
    mode = mix.data_law(c).means[:1]
    kc_exact, kc_est, lid_exact, lid_est, lid_se = [], [], [], [], []
    for t in ts:
        a, s = float(mix.alpha(t)), float(mix.sigma(t))
        x = a * mode + 0.5 * s * u
        field = lambda z, t=t, c=c: mix.score(z, t, c)  # noqa: E731
        sc, H = mix.score_and_hessian(x, t, c)
        kc_exact.append(float(principal_curvatures_from_derivatives(sc, H)[0, 0]))
        kc_est.append(float(principal_curvatures(field, x, 1, n_iter=mix.dim - 1, generator=g).values[0, 0]))
        lid_exact.append(float(flipd_from_derivatives(sc, H, s)))
        e = flipd(field, x, s, n_probes=16 if FAST else 64, probe="gaussian", generator=g)
        lid_est.append(float(e.value))
        lid_se.append(float(e.stderr))
    axes[0].plot(sig, kc_exact, color=color, label=f"{name}, closed form")
    axes[0].plot(sig, kc_est, "o", color=color, ms=4, label=f"{name}, Lanczos on JVPs")
    axes[1].plot(sig, lid_exact, color=color, label=f"{name}, closed form")
    axes[1].errorbar(sig, lid_est, yerr=2 * np.array(lid_se), fmt="o", color=color, ms=4, label=f"{name}, Hutchinson (2 SE)")
for ax, ylabel in zip(axes, ("largest principal curvature", "FLIPD local intrinsic dimension")):
    ax.set_xscale("log")
    ax.set_xlabel("noise level sigma_t")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
axes[0].set_yscale("log")
axes[0].set_title("level-set curvature at alpha_t mode + 0.5 sigma_t u")
axes[1].set_title("FLIPD (d = 8)")
fig.tight_layout()
fig.savefig(f"{FIG}/fig4_curvature_lid.png", dpi=110)
