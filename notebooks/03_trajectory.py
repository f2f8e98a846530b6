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
# # Memorization geometry along the trajectory (Brokman et al., NeurReps 2025)
#
# kappa-delta (the mean cosine of the guidance-gap field with the outward normal on a sphere of
# radius sigma_t sqrt(d) around alpha_t x0_hat) tracked at every DDIM step: its mean and spread for
# memorized and ordinary prompts, and the per-step AUROC of the direction-only, magnitude-only
# (guidance norm) and combined detectors, on the mixture and on the testbed. Then the branch
# diagnostic: which of the two predictions drives the gap's direction on the probe sphere.

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from memgeo.detect import branch_diagnostic
from memgeo.experiments import per_step_auroc, trajectory_traces
from memgeo.gmm import ConditionalGaussianMixture
from memgeo.plotting import draw_branch_diagnostic, draw_trajectory_auroc, save_figure
from memgeo.testbed import load_testbed, testbed_labels, testbed_metadata
from memgeo.testbed.protocol import SCORING_SEED_START

FAST = os.environ.get("MEMGEO_FAST") == "1"
CRITERION = "verbatim"  # the protocol's labels, by which the embedded testbed meets its realism targets (docs/testbed.md); or "replication"
FIG = os.environ.get("MEMGEO_FIGURE_DIR", "figures")
os.makedirs(FIG, exist_ok=True)
n_steps = 15 if FAST else 50
S = 4 if FAST else 8

mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=4 if FAST else 12, n_generalizing=4 if FAST else 12, seed=0)
mix_conds, mix_labels = list(range(mix.n_conditions)), mix.memorized.int().tolist()
model = load_testbed()
texts, labels, _ = testbed_labels(testbed_metadata(), criterion=CRITERION)
pos = [t for t, y in zip(texts, labels) if y == 1][: 4 if FAST else 20]
neg = [t for t, y in zip(texts, labels) if y == 0][:: 22 if FAST else 4][: 4 if FAST else 22]
tb_conds, tb_labels = pos + neg, [1] * len(pos) + [0] * len(neg)

# %%
fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
for row, (name, m, conds, labs) in enumerate([("mixture", mix, mix_conds, mix_labels), (f"testbed ({CRITERION} labels)", model, tb_conds, tb_labels)]):
    kap, mag, y = trajectory_traces(m, conds, labs, seeds=S, n_steps=n_steps, guidance_scale=7.5,
                                    seed_start=SCORING_SEED_START)  # apart from the testbed's label seeds
    steps = np.arange(1, n_steps + 1)
    ax = axes[row, 0]
    for cls, color, label in ((1, "C3", "memorized"), (0, "C0", "ordinary")):
        k = kap[:, torch.as_tensor(y == cls)].numpy()
        ax.plot(steps, k.mean(1), color=color, label=label)
        ax.fill_between(steps, np.percentile(k, 10, 1), np.percentile(k, 90, 1), color=color, alpha=0.2)
    ax.set_xlabel("DDIM step (1 = pure noise)")
    ax.set_ylabel("kappa-delta (mean cosine)")
    ax.set_title(f"{name}: kappa-delta (mean, 10-90%)")
    ax.legend()
    ax = axes[row, 1]
    draw_trajectory_auroc(ax, per_step_auroc(kap, mag, y))
    ax.set_title(f"{name}: per-step detection")
fig.tight_layout()
fig.savefig(f"{FIG}/fig3_trajectory.png", dpi=110)

# %% [markdown]
# ## Which branch drives the signal
#
# On the same probe spheres, the mean cosine with the outward normal of the conditional prediction,
# the unconditional prediction and their gap (kappa-delta is minus the last), and the gap norm at
# the sampler's latent. A prediction that has learned the basin a sample sits in points outwards
# (cosine near 1). Where the unconditional branch has learned a memorized image as well as the
# conditional one (on the small-data testbed, `docs/results.md`), the gap loses its outward direction
# and its norm, and kappa-delta and the guidance norm rank memorized prompts *below* ordinary ones.
# The embedded testbed, trained in Stable Diffusion's regime, never drops a duplicate's caption, so
# its unconditional branch has almost never seen one.

# %%
fig, axes = plt.subplots(2, 4, figsize=(15, 6.5))
for row, (name, m, conds, labs) in enumerate([("mixture", mix, mix_conds, mix_labels), (f"testbed ({CRITERION} labels)", model, tb_conds, tb_labels)]):
    diag = branch_diagnostic(m, conds, seeds=2 if FAST else 4, n_steps=n_steps, guidance_scale=7.5,
                             seed_start=SCORING_SEED_START)
    draw_branch_diagnostic(axes[row], diag, [lab for lab in labs for _ in range(2 if FAST else 4)])
    axes[row, 0].set_ylabel(name)
save_figure(fig, f"{FIG}/fig3_branch_diagnostic.png", dpi=110)

