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
# # Detection summary on the testbed
#
# ROC curves and the leaderboard of every memgeo signal on the testbed: prompts memorized by
# generation (at least half of their generations copy their training canvases) against prompts
# that are not (at most 10%), one score per generation; then per prompt, per kind of memorization
# (matching, template, local), and the memorization rate against duplication. TPR at a target FPR
# uses the strict convention. An AUROC below 0.5 would mean a signal ranks the classes the wrong
# way round on this model; every curve is shown as measured, never flipped. FLIPD probes at the
# time its own LID-versus-t curve gives (`flipd_t0`). The caption-only baseline reads the prompts
# alone, with no model: every caption of this testbed comes from one grammar, whichever images
# were duplicated, so it should sit near chance (0.5). On the community's prompt sets it scores
# 0.999-1.000.

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from memgeo.detect import roc_curve
from memgeo.experiments import caption_baseline_row, evaluate_signals, format_breakdown, format_leaderboard
from memgeo.plotting import plot_duplication_curve
from memgeo.testbed import KINDS, duplication_curve, load_testbed, testbed_kinds, testbed_labels, testbed_metadata
from memgeo.testbed.protocol import SCORING_SEED_START

FAST = os.environ.get("MEMGEO_FAST") == "1"
CRITERION = "verbatim"  # the protocol's labels, by which the embedded testbed meets its realism targets (docs/testbed.md); or "replication"
FIG = os.environ.get("MEMGEO_FIGURE_DIR", "figures")
os.makedirs(FIG, exist_ok=True)
model = load_testbed()
meta = testbed_metadata()
texts, labels, counts = testbed_labels(meta, criterion=CRITERION)
if FAST:
    pos = [i for i, y in enumerate(labels) if y == 1][::8][:3]
    neg = [i for i, y in enumerate(labels) if y == 0][::30][:3]
    texts, labels = [texts[i] for i in pos + neg], [labels[i] for i in pos + neg]
kinds = testbed_kinds(meta, texts)
seeds = 2 if FAST else 4
rows = evaluate_signals(model, texts, labels, seeds=seeds, n_steps=10 if FAST else 50,
                        seed_start=SCORING_SEED_START)  # scoring seeds, apart from the label seeds
rows.append(caption_baseline_row(texts, labels, seeds=seeds))  # what the captions alone give away
table = format_leaderboard(rows, title=f"testbed ({CRITERION} labels), per generation: {sum(labels)} memorized vs "
                                        f"{len(labels) - sum(labels)} not memorized prompts")
groups = {k: [kd == k for kd in kinds] for k in KINDS}
breakdown = format_breakdown(rows, seeds=seeds, groups=groups, title="per prompt, and per kind of memorization")
print(table + "\n\n" + breakdown)
with open(f"{FIG}/fig5_leaderboard.md", "w") as fh:  # the tables beside the figure
    fh.write(table + "\n\n" + breakdown + "\n")

# %%
fig, ax = plt.subplots(figsize=(5.5, 5))
for r in rows:
    f, t, _ = roc_curve(r.labels, r.scores)
    ax.plot(f, t, label=f"{r.signal} (AUROC {r.auroc:.3f})")
ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
ax.set_xlabel("false positive rate")
ax.set_ylabel("true positive rate")
ax.set_title(f"testbed ({CRITERION} labels): ROC per generation")
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
fig.savefig(f"{FIG}/fig5_roc_testbed.png", dpi=110)

# %% [markdown]
# Ground truth: the fraction of generations that copy, against how many times the prompt's images
# were in training (12 to 272 on the embedded testbed), per kind. Graded rates are what let a detector be ranked by how well
# it follows memorization, not only whether it separates two classes.

# %%
plot_duplication_curve(duplication_curve(meta, CRITERION), f"{FIG}/fig5_rate_vs_duplication.png")
