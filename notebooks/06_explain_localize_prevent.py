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
# # Explain, localize, prevent
#
# Three questions beyond detection, on the testbed.
#
# 1. **Which tokens trigger memorization?** Per-token attribution of the guidance norm (Wen et al.,
#    ICLR 2024): the gradient norm with respect to each token's input embedding (through the text
#    encoder), with respect to each row of the prompt embedding (as Wen et al.'s released code), and
#    leave-one-token-out as the exact reference.
# 2. **Where in the image?** The variance collapse of the conditional denoised estimate against the
#    unconditional one, per pixel, at the step where the signal-to-noise ratio reaches 1; beside it
#    the end token's cross-attention at the last step (in the spirit of bright-ending attention,
#    Chen et al., ICLR 2025). The cyan outline is the duplicated region (the prompt's mask).
# 3. **Can generation avoid it?** The fidelity-memorization trade-off of every inference-time
#    mitigation on the testbed's memorized prompts by the protocol's verbatim level, read from the committed
#    benchmark (`memgeo bench --mitigation --max-prompts 24`,
#    `benchmarks/results/mitigation_sd_bench/primary_1/mitigation.json`). Training-time mitigation (a testbed
#    trained while leaving out samples whose guidance-gap norm reached a threshold) is measured on the
#    small-data testbed (`benchmarks/results/mitigation_small_data/mitigation.json`, `docs/results.md`).

# %%
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from memgeo.explain import cross_attention_map, localize, pixel_auroc, token_attribution
from memgeo.plotting import plot_localization, plot_token_attribution, plot_tradeoff
from memgeo.testbed import load_testbed, memorization_rate, testbed_metadata
from memgeo.testbed.protocol import testbed_scoring_seeds

FAST = os.environ.get("MEMGEO_FAST") == "1"
CRITERION = "verbatim"  # the protocol's labels, by which the embedded testbed meets its realism targets (docs/testbed.md); or "replication"
FIG = os.environ.get("MEMGEO_FIGURE_DIR", "figures")
os.makedirs(FIG, exist_ok=True)
n_steps = 10 if FAST else 50
model = load_testbed()
meta = testbed_metadata()


def scoring(n: int) -> list[int]:
    """``n`` scoring seeds, apart from the seeds that labelled the testbed."""
    return testbed_scoring_seeds(meta, n)


memorized = [p for p in meta["prompts"] if p["kind"] == "memorized" and memorization_rate(p, CRITERION) >= 0.5]

# %% [markdown]
# ## Token attribution
# One memorized prompt of each kind. Bars are scaled to each method's largest value; leave-one-out
# is the drop of the guidance norm when the token is removed and the prompt encoded again.

# %%
examples = [next(p for p in memorized if p["memorization"] == k) for k in ("matching", "template", "local")]
fig, axes = plt.subplots(len(examples), 1, figsize=(7, 2.3 * len(examples)))
for ax, p in zip(axes, examples):
    att = token_attribution(model, p["text"], space="input", seeds=scoring(2 if FAST else 4), n_steps=n_steps)
    plot_token_attribution(att, None, ax=ax, title=f"{p['memorization']}: {p['text']} (Spearman with leave-one-out "
                                                     f"{att.spearman:.2f})")
fig.tight_layout()
fig.savefig(f"{FIG}/fig6_token_attribution.png", dpi=110)

# %% [markdown]
# ## Localization
# Local-memorization prompts memorized by generation: the mean generated canvas, the memorization
# map and the cross-attention baseline, with the pixel AUROC of each against the mask.

# %%
local = [p for p in memorized if p["memorization"] == "local"][: 2 if FAST else 4]
seeds = scoring(3 if FAST else 8)
fig, axes = plt.subplots(len(local), 3, figsize=(7, 2.4 * len(local)), squeeze=False)
for row, p in zip(axes, local):
    loc = localize(model, p["text"], seeds=seeds, n_steps=n_steps)
    attn = cross_attention_map(model, p["text"], n_steps=n_steps, x_last=loc.x_last)
    plot_localization(model, loc, None, cross_attention=attn, mask=p["mask"], axes=row)
    row[1].set_title(f"map, AUROC {pixel_auroc(loc.map, p['mask']):.2f}", fontsize=7)
    row[2].set_title(f"cross-attention, AUROC {pixel_auroc(attn, p['mask']):.2f}", fontsize=7)
    row[0].set_title(p["text"], fontsize=6)
fig.tight_layout()
fig.savefig(f"{FIG}/fig6_localization.png", dpi=110)

# %% [markdown]
# ## Mitigation trade-off
# The trade-off `memgeo bench --mitigation` measured on the embedded testbed (primary-1: verbatim labels, scoring
# seeds). Memorization rate (verbatim copies of their own image) of the memorized prompts against their caption
# fidelity (the share of canvas cells whose digit, by a digit classifier, is the one the caption
# names), one line per method across strengths; the dashed line is the Pareto front.

# %%
result = json.loads((Path("..") / "benchmarks" / "results" / "mitigation_sd_bench" / "primary_1" / "mitigation.json").read_text())
fig, ax = plt.subplots(figsize=(6.5, 4.8))
rows = result["rows"]
plot_tradeoff(rows, None, [rows[i] for i in result["pareto"]], ax=ax)
fig.tight_layout()
fig.savefig(f"{FIG}/fig6_training_tradeoff.png", dpi=110)
for r in rows:
    print(f"{r['method']:<24} {r['strength']!s:>5}  rate {r['memorization_rate']:.3f}  fidelity kept {r['fidelity_kept']:.2f}  "
          f"ordinary change {r['ordinary_change']:+.3f}")
