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
# # Detection summary on the testbed
#
# ROC curves and the leaderboard of every memgeo signal on the testbed: memorized prompts (by
# generation) against ordinary and held-out prompts, one score per generation. TPR at a target FPR
# uses the strict convention. An AUROC below 0.5 would mean a signal ranks the classes the wrong
# way round on this model; every curve is shown as measured, never flipped. FLIPD probes at the
# time its own LID-versus-t curve gives (`flipd_t0`): at the smallest timestep, t = 1, this small
# network does not resolve the noise around guided samples and the estimate exceeds the ambient
# dimension, which inverted the signal. The caption-only baseline reads the prompts alone, with no
# model: on this testbed the memorized captions differ in form from the ordinary ones, and it
# separates them perfectly.

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from memgeo.bench import testbed_labels
from memgeo.detect import caption_baseline_row, evaluate_signals, format_leaderboard, roc_curve
from memgeo.sd.testbed import load_testbed, testbed_metadata

FAST = os.environ.get("MEMGEO_FAST") == "1"
FIG = os.environ.get("MEMGEO_FIGURE_DIR", "figures")
os.makedirs(FIG, exist_ok=True)
model = load_testbed()
texts, labels, counts = testbed_labels(testbed_metadata())
if FAST:
    pos = [i for i, y in enumerate(labels) if y == 1][:3]
    neg = [i for i, y in enumerate(labels) if y == 0][::30][:3]
    texts, labels = [texts[i] for i in pos + neg], [labels[i] for i in pos + neg]
seeds = 2 if FAST else 4
rows = evaluate_signals(model, texts, labels, seeds=seeds, n_steps=10 if FAST else 50)
rows.append(caption_baseline_row(texts, labels, seeds=seeds))  # what the captions alone give away
table = format_leaderboard(rows, title=f"testbed: {sum(labels)} memorized vs {len(labels) - sum(labels)} ordinary prompts")
print(table)
with open(f"{FIG}/fig5_leaderboard.md", "w") as fh:  # the table beside the figure
    fh.write(table + "\n")

# %%
fig, ax = plt.subplots(figsize=(5.5, 5))
for r in rows:
    f, t, _ = roc_curve(r.labels, r.scores)
    ax.plot(f, t, label=f"{r.signal} (AUROC {r.auroc:.3f})")
ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
ax.set_xlabel("false positive rate")
ax.set_ylabel("true positive rate")
ax.set_title("testbed: ROC per generation")
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
fig.savefig(f"{FIG}/fig5_roc_testbed.png", dpi=110)
