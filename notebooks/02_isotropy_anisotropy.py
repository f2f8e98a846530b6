# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Isotropic versus anisotropic regimes (Asthana & Belagiannis, ICLR 2026)
#
# On the canonical memorization mixture: the anisotropy index of the Hessian of log p_t against
# the timestep (closed form), at memorized and generalizing modes; the guidance-norm distributions
# at high (t = 981) and low (t = 41) noise for memorized and generalizing conditions; and the
# alignment cosine cos(s_delta, s_u) against the timestep. The same curves on the testbed (its
# anisotropy index from the exact Jacobian of its learned score).

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from memgeo.detect import guidance_norm
from memgeo.geometry import anisotropy_index, jacobian
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.guidance import guidance_alignment, guidance_pair
from memgeo.sampling import initial_noise
from memgeo.testbed import load_testbed, testbed_labels, testbed_metadata
from memgeo.testbed.protocol import SCORING_SEED_START

FAST = os.environ.get("MEMGEO_FAST") == "1"
CRITERION = "verbatim"  # the protocol's labels, by which the embedded testbed meets its realism targets (docs/testbed.md); or "replication"
FIG = os.environ.get("MEMGEO_FIGURE_DIR", "figures")
os.makedirs(FIG, exist_ok=True)
mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=10, n_generalizing=10, seed=0)
mem = [c for c in range(mix.n_conditions) if mix.memorized[c]]
gen = [c for c in range(mix.n_conditions) if not mix.memorized[c]]
ts = mix.timesteps(25 if FAST else 50)
S = 8 if FAST else 32



def guidance_norm_histograms(axes, model, groups, x_T, name):
    """Guidance-norm histograms at t_hi and t_lo, the first and third-to-last of 50 DDIM timesteps."""
    ts50 = model.timesteps(50)
    for ax, t in zip(axes, (int(ts50[0]), int(ts50[-3]))):
        for (group, conds), color in zip(groups, ("C3", "C0")):
            vals = [guidance_norm(model, c, x_T, t=t).score for c in conds]
            ax.hist(torch.cat(vals).numpy(), bins=30, alpha=0.6, color=color, label=group)
        ax.set_xlabel("guidance norm |eps_c - eps_u| at x_T")
        ax.set_ylabel("count")
        ax.set_title(f"{name}, t = {t}")
        ax.legend()


# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
ax = axes[0]
for group, conds, color in (("memorized", mem, "C3"), ("generalizing", gen, "C0")):
    curves = []
    for c in conds:
        mode = mix.data_law(c).means[:1]  # a mode of the condition's law (its training point if memorized)
        curves.append([float(anisotropy_index(mix.marginal(int(t), c).hessian(float(mix.alpha(int(t))) * mode))) for t in ts])
    curves = np.array(curves)
    ax.plot(ts, curves.mean(0), color=color, label=group)
    ax.fill_between(ts, curves.min(0), curves.max(0), color=color, alpha=0.2)
ax.set_xlabel("timestep t")
ax.set_ylabel("anisotropy index of H (closed form)")
ax.set_title("conditional Hessian at alpha_t x mode")
ax.invert_xaxis()
ax.legend()

x_T = initial_noise(mix, S)
guidance_norm_histograms(axes[1:], mix, (("memorized", mem), ("generalizing", gen)), x_T, "mixture")
fig.tight_layout()
fig.savefig(f"{FIG}/fig2_mixture_regimes.png", dpi=110)

# %%
def alignment_curves(model, conds, x_T, timesteps):
    out = []
    for c in conds:
        row = []
        for t in timesteps:
            eu, ec = guidance_pair(model, x_T, int(t), c)
            row.append(float(guidance_alignment(eu, ec - eu).mean()))
        out.append(row)
    return np.array(out)


model = load_testbed()
meta = testbed_metadata()
texts, labels, _ = testbed_labels(meta, criterion=CRITERION)  # memorized or not by generation
tb_mem = [t for t, y in zip(texts, labels) if y == 1][: 4 if FAST else 20]
tb_ord = [t for t, y in zip(texts, labels) if y == 0][:: 20 if FAST else 4]
x_tb = initial_noise(model, range(SCORING_SEED_START, SCORING_SEED_START + S))  # apart from the label seeds
tb_ts = model.timesteps(10 if FAST else 50)

fig, axes = plt.subplots(1, 4, figsize=(19, 3.8))
for ax, (name, m, groups, xs, tt) in zip(
    axes[:2],
    [("mixture", mix, (("memorized", mem), ("generalizing", gen)), x_T, ts),
     (f"testbed, {CRITERION} labels", model, (("memorized", tb_mem), ("ordinary", tb_ord)), x_tb, tb_ts)],
):
    with torch.no_grad():
        for (group, conds), color in zip(groups, ("C3", "C0")):
            a = alignment_curves(m, conds, xs, tt)
            ax.plot(tt, a.mean(0), color=color, label=group)
            ax.fill_between(tt, np.percentile(a, 10, 0), np.percentile(a, 90, 0), color=color, alpha=0.2)
    ax.set_xlabel("timestep t")
    ax.set_ylabel("cos(s_delta, s_u) at x_T")
    ax.set_title(f"alignment, {name}")
    ax.invert_xaxis()
    ax.legend()
guidance_norm_histograms(axes[2:], model, (("memorized", tb_mem), ("ordinary", tb_ord)), x_tb, f"testbed, {CRITERION} labels")
fig.tight_layout()
fig.savefig(f"{FIG}/fig2_alignment_and_testbed.png", dpi=110)

# %%
# anisotropy index of the testbed's learned Hessian (exact Jacobian, 256 JVPs) at its generated samples
from memgeo.sampling import ddim_sample

k = 1 if FAST else 6
index_ts = model.timesteps(5 if FAST else 10)  # one full Jacobian (256 JVPs) per point and timestep
fig, ax = plt.subplots(figsize=(5, 3.8))
for group, conds, color in (("memorized", tb_mem[:k], "C3"), ("ordinary", tb_ord[:k], "C0")):
    curves = []
    for c in conds:
        x0 = ddim_sample(model, c, x_tb[:1], n_steps=20 if FAST else 50).denoised
        row = []
        for t in index_ts:
            xt = float(model.alpha(int(t))) * x0
            J = jacobian(lambda z: model.score(z, int(t), c), xt)
            row.append(float(anisotropy_index(J)))
        curves.append(row)
    curves = np.array(curves)
    ax.plot(index_ts, curves.mean(0), "o-", color=color, label=group)
ax.set_xlabel("timestep t")
ax.set_ylabel("anisotropy index of the learned Jacobian")
ax.set_title("testbed, at alpha_t x_0 (generated)")
ax.invert_xaxis()
ax.legend()
fig.tight_layout()
fig.savefig(f"{FIG}/fig2_testbed_anisotropy_index.png", dpi=110)
