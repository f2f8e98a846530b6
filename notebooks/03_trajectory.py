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
# # Memorization geometry along the trajectory (Brokman et al., NeurReps 2025)
#
# kappa-delta (the direction-only flux of the guidance-gap field on a sphere of radius
# sigma_t sqrt(d) around alpha_t x0_hat) tracked at every DDIM step: its mean and spread for
# memorized and ordinary prompts, and the per-step AUROC of the direction-only, magnitude-only
# (guidance norm) and combined detectors, on the mixture and on the testbed.

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from memgeo.bench import draw_trajectory_auroc, per_step_auroc, testbed_labels, trajectory_traces
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.sd.testbed import load_testbed, testbed_metadata

FAST = os.environ.get("MEMGEO_FAST") == "1"
FIG = os.environ.get("MEMGEO_FIGURE_DIR", "figures")
os.makedirs(FIG, exist_ok=True)
n_steps = 15 if FAST else 50
S = 4 if FAST else 8

mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=4 if FAST else 12, n_generalizing=4 if FAST else 12, seed=0)
mix_conds, mix_labels = list(range(mix.n_conditions)), mix.memorized.int().tolist()
model = load_testbed()
texts, labels, _ = testbed_labels(testbed_metadata())
pos = [t for t, y in zip(texts, labels) if y == 1][: 4 if FAST else 20]
neg = [t for t, y in zip(texts, labels) if y == 0][:: 22 if FAST else 4][: 4 if FAST else 22]
tb_conds, tb_labels = pos + neg, [1] * len(pos) + [0] * len(neg)

# %%
fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
for row, (name, m, conds, labs) in enumerate([("mixture", mix, mix_conds, mix_labels), ("testbed", model, tb_conds, tb_labels)]):
    kap, mag, y = trajectory_traces(m, conds, labs, seeds=S, n_steps=n_steps, guidance_scale=7.5)
    steps = np.arange(1, n_steps + 1)
    ax = axes[row, 0]
    for cls, color, label in ((1, "C3", "memorized"), (0, "C0", "ordinary")):
        k = kap[:, torch.as_tensor(y == cls)].numpy()
        ax.plot(steps, k.mean(1), color=color, label=label)
        ax.fill_between(steps, np.percentile(k, 10, 1), np.percentile(k, 90, 1), color=color, alpha=0.2)
    ax.set_xlabel("DDIM step (1 = pure noise)")
    ax.set_yscale("symlog", linthresh=1.0)  # the last steps are two orders larger than the first
    ax.set_ylabel("kappa-delta (symlog scale)")
    ax.set_title(f"{name}: kappa-delta (mean, 10-90%)")
    ax.legend()
    ax = axes[row, 1]
    draw_trajectory_auroc(ax, per_step_auroc(kap, mag, y))
    ax.set_title(f"{name}: per-step detection")
fig.tight_layout()
fig.savefig(f"{FIG}/fig3_trajectory.png", dpi=110)
