"""Training regimes as data: each regime's data (the builder's arguments, duplicated images at their shares of the
draws), final step and caption dropout, and the learning-rate schedule every run follows."""

from __future__ import annotations

from .canvas import ladder_from_shares

__all__ = ["REGIMES", "SD_SHARES", "SD_LADDER_SHARES", "SD_LOCAL_LADDER_SHARES", "SD_GRADED_LADDER_SHARES",
           "SD_SHARED_LADDER_SHARES", "SD_SHARED_COMPANIONS", "learning_rate"]


#: Shares of the training draws per duplicated image in the SD regime (0.003 is 0.3%), per kind: a ladder reaching
#: 0.4% (matching, local) and 0.3% per image (template, two canvases per caption), down to 0.075%. Copying in this
#: regime needs share as well as views: a duplicate at 0.071% of the draws did not move towards its image from 183 to
#: 1,324 views, one at 0.25-0.29% began to by about 1,300 (benchmarks/results/sd_capped_sweep/sd_regime_sweep.md).
SD_SHARES = {"matching": (0.004, 0.0035, 0.003, 0.003, 0.0015, 0.00075),
             "template": (0.003, 0.003, 0.0015, 0.00075),
             "local": (0.004, 0.0035, 0.003, 0.003, 0.0015, 0.00075)}

#: The second SD-regime ladder: more duplicated prompts per kind between 0.1% and 0.5% of the draws per image, where
#: the first run's (SD_SHARES) began to copy at 24,000 steps (matching and template from 0.15%, none at 0.075%), so that
#: each kind can give four memorized prompts and the rungs near 0.1-0.15% graded ones; duplicated items 4.9% of the draws.
SD_LADDER_SHARES = {"matching": (0.004, 0.003, 0.0025, 0.002, 0.002, 0.0015, 0.0015, 0.001),
                    "template": (0.003, 0.002, 0.0015, 0.0015, 0.001),
                    "local": (0.005, 0.004, 0.0025, 0.002)}

#: The third SD-regime ladder, for local memorization: on the second ladder's causal twin (duplicates never dropped)
#: matching and template prompts copied from 0.1% of the draws per image by 16,000 steps, while no local cell crossed
#: 1/3 from 0.2-0.5% (benchmarks/results/ladder_cond_only/sd_ladder_cond_only_share_sweep.md). So the matching and template rungs go
#: down to 0.075% (each kind still reaching 0.3%) and the local cells take the budget left, 0.5-0.9%; duplicated items
#: 4.9% of the draws.
SD_LOCAL_LADDER_SHARES = {"matching": (0.003, 0.002, 0.0015, 0.001, 0.00075),
                          "template": (0.003, 0.0015, 0.001, 0.00075),
                          "local": (0.009, 0.008, 0.006, 0.005)}

#: The fourth SD-regime ladder, for graded memorization (R4: six prompts copying at some seeds and not others), under the
#: twin's rule. On the twin and the third ladder each rung went from no copy to every seed within 2,000-4,000 steps,
#: crossing later the smaller its share (0.3% by 10,000 steps, 0.1% by 12,000-16,000) and the 0.075% rungs copying
#: at every seed by 24,000 (benchmarks/results/ladder_local/sd_ladder_local_share_sweep.md); so besides three rungs per kind that
#: copy (0.1-0.3%), five matching and three template rungs sit close together at 0.05-0.07%, where the last snapshots
#: should find them in transition. The local cells copy by the replication level from 0.6% of the draws and by the
#: verbatim rule at no share tried, so four sit at 0.6-0.7%; duplicated items 4.9% of the draws.
SD_GRADED_LADDER_SHARES = {"matching": (0.003, 0.0015, 0.001, 0.0007, 0.00065, 0.0006, 0.00055, 0.0005),
                           "template": (0.003, 0.0015, 0.001, 0.00065, 0.00055, 0.0005),
                           "local": (0.007, 0.0065, 0.006, 0.006)}


#: The fifth SD-regime ladder, for graded memorization by a shared caption. On the fourth ladder a prompt's copy rate
#: was nearly 0 or 1 at every snapshot, each rung crossing within 2,000-4,000 steps, so graded prompts were those caught
#: mid-crossing (at most 6, twice in 68 readings). A caption that labels its duplicated image and other images too
#: mixes the duplicate with them in the prompt's conditional distribution, a mixture whose weight does not change as
#: training goes on (both are drawn at fixed shares). So eight matching rungs at 0.09% share their caption with 6-330
#: single canvases (SD_SHARED_COMPANIONS; the duplicate is 49 singles' views, so from 0.89 to 0.13 of its caption's
#: draws), beside four plain rungs per kind (0.1-0.3%) and local cells at 0.6% (where the fourth ladder's replicated);
#: duplicated items 4.9% of the draws. Measured: the rates did not follow the mix (a rung at 0.43 of its caption copied
#: at every seed, ones at 0.89 never); R1-R4 held by the replication level at 20,000 steps, the 14 rungs at 0.09-0.1%
#: crossing together (benchmarks/results/ladder_shared/sd_ladder_shared_share_sweep.md).
SD_SHARED_LADDER_SHARES = {"matching": (0.003, 0.001, 0.001, 0.001) + (0.0009,) * 8,
                           "template": (0.003, 0.001, 0.001, 0.001),
                           "local": (0.006, 0.006, 0.006, 0.006)}
SD_SHARED_COMPANIONS = {"matching": (0, 0, 0, 0, 6, 12, 22, 38, 65, 110, 190, 330),
                        "template": (0, 0, 0, 0), "local": (0, 0, 0, 0)}


def _sd_regime(shares: dict, companions: dict | None = None, *, n_single: int = 50000, n_variants: int = 2,
               max_length: int = 16, **data) -> dict:
    """An SD-regime entry of :data:`REGIMES`: ``n_single`` pixel-unique single canvases, each duplicated image at its
    share of the draws (``shares``, per kind), template prompts over ``n_variants`` canvases, 24,000 steps,
    ``max_length`` token positions; ``companions``: canvases sharing each duplicated prompt's caption
    (:func:`build_canvas_data`), singles too; ``data``: further arguments of the builder."""
    singles = n_single + sum(sum(v) for v in (companions or {}).values())
    built = {"n_single": n_single, "ladder": ladder_from_shares(shares, n_single=singles, n_variants=n_variants),
             "n_variants": n_variants, "augment": True, **data}
    return {"data": {**built, "companions": companions} if companions else built, "steps": 24000,
            "architecture": {"max_length": max_length}}


def _protocol_regime(name: str) -> dict:
    """The :data:`REGIMES` entry of a benchmark protocol (:mod:`memgeo.testbed.protocol`): its data, final step and
    caption dropout, read from the protocol's file."""
    from .protocol import load_protocol

    proto = load_protocol(name)
    reg = proto["regime"]
    if not reg["augment"]:
        raise ValueError(f"protocol {name!r}: an SD-regime protocol warps every cell (augment true)")
    spec = _sd_regime({k: tuple(v) for k, v in reg["shares"].items()}, n_single=reg["n_single"],
                      n_variants=reg["n_variants"], max_length=reg["max_length"], n_ordinary=reg["n_ordinary"],
                      n_heldout=reg["n_heldout"])
    return {**spec, "steps": proto["training"]["steps"], "dropout_duplicated": proto["regime"]["dropout_duplicated"],
            "lr_decay_steps": proto["training"]["lr_decay_steps"]}


#: Training regimes, as data: the data builder's arguments, the default number of steps (batch 64), and where they
#: differ from :data:`ARCHITECTURE` the networks' settings.
REGIMES = {
    # the small-data testbed (benchmarks/results/small_data_testbed/), bit for bit: 2,272 distinct canvases seen about
    # 250 times each, duplicates 12% of items
    "small-data": {"data": {}, "steps": 10000},
    # Stable Diffusion's regime: 50,000 single canvases (every cell instance warped, so pixel-unique) seen about 29
    # times each in 24,000 steps; duplicated items 4.8% of the draws, each duplicated image on the SD_SHARES ladder
    # (0.3% of 24,000 x 64 draws is about 4,600 views). Captions fit 16 token positions.
    "sd": _sd_regime(SD_SHARES),
    # the SD regime with the second ladder (SD_LADDER_SHARES): the same 50,000 single compositions and captions (the
    # builder draws them first; their warps differ), 17 duplicated prompts instead of 16, more of them at the shares
    # where copying began
    "sd-ladder": _sd_regime(SD_LADDER_SHARES),
    # the second ladder, bit for bit (the same batches, noises and timesteps), except that a duplicated item's caption
    # is never dropped: its image is 0.1-0.5% of the captioned draws, which this budget needs for copying, but none of
    # the unconditional branch's, as a Stable Diffusion duplicate (about 1e-6 of LAION's draws) is almost none of its
    # unconditional model's. Where the second ladder's gap inverts mid-generation, its unconditional branch had learned
    # the copies too (benchmarks/results/ladder_sd/sd_regime_commitment.md)
    "sd-ladder-cond-only": {**_sd_regime(SD_LADDER_SHARES), "dropout_duplicated": 0.0},
    # the third ladder (SD_LOCAL_LADDER_SHARES) under the twin's rule (no duplicated caption ever dropped), which R1
    # needs: local cells at 0.5-0.9% of the draws
    "sd-ladder-local": {**_sd_regime(SD_LOCAL_LADDER_SHARES), "dropout_duplicated": 0.0},
    # the fourth ladder (SD_GRADED_LADDER_SHARES) under the twin's rule: rungs clustered at 0.05-0.07% of the draws
    # for graded memorization, local cells at 0.6-0.7%
    "sd-ladder-graded": {**_sd_regime(SD_GRADED_LADDER_SHARES), "dropout_duplicated": 0.0},
    # the fifth ladder (SD_SHARED_LADDER_SHARES) under the twin's rule: eight matching rungs share their caption with
    # single canvases (SD_SHARED_COMPANIONS), 14 rungs at 0.09-0.1% of the draws
    "sd-ladder-shared": {**_sd_regime(SD_SHARED_LADDER_SHARES, SD_SHARED_COMPANIONS), "dropout_duplicated": 0.0},
    # the benchmark protocol's regime (memgeo/testbed/protocols/sd-bench.json, fixed before its runs trained): 50,000
    # single canvases; 24 matching, 16 template and 12 local duplicated prompts on geometric share ladders from 0.02%
    # of the draws, duplicated items under 10%; no duplicated caption dropped (its uniform-dropout run drops them)
    "sd-bench": _protocol_regime("sd-bench"),
    # the first SD-regime attempt: 88,000 distinct canvases seen about 20 times each in 27,500 steps, duplicated items
    # capped at 2% (10 prompts per kind, 64 or 32 copies: 0.071% of the draws at most). Measured: no prompt copies at
    # 27,500 steps (benchmarks/results/sd_capped_sweep/sd_regime_sweep.md)
    "sd-capped": {"data": {"n_single": 88000, "n_per_kind": 10, "ladder": (64,) * 8 + (32,) * 2, "n_variants": 2,
                           "augment": True}, "steps": 27500},
    # a LoRA fine-tune of a trained testbed (``base=``), as people fine-tune Stable Diffusion on their own images: 800
    # new pixel-unique canvases (every cell instance warped) seen once per epoch, and on a ladder of 1 to 32 copies
    # 6 prompts of each kind; no caption dropout (diffusers' train_text_to_image_lora.py default); rank-16 adapters on
    # the UNet's attention projections and its resnets' convolutions (as LoCon-style adapters do), the base frozen.
    # Adapters on the attention projections alone (rank 8 and 16, up to 3,000 steps) copied nothing here
    # (benchmarks/results/finetune_regime/finetune_regime.md)
    "finetune": {"data": {"n_single": 800, "n_per_kind": 6, "n_ordinary": 40, "n_heldout": 20, "augment": True},
                 "steps": 3000, "dropout": 0.0, "lora": {"rank": 16, "lr": 1e-3,
                                                          "targets": ("to_q", "to_k", "to_v", "to_out.0", "conv1",
                                                                      "conv2")}},
    # the causal test of the mechanism: the small-data regime, bit for bit, except that a duplicated item's
    # caption is never dropped, so the unconditional branch never sees a duplicated image
    "small-data-cond-only": {"data": {}, "steps": 10000, "dropout_duplicated": 0.0},
}


def learning_rate(step: int, steps: int, lr: float, decay_steps: int = 0) -> float:
    """The learning rate of training step ``step`` (0-based) of ``steps``: ``lr``, except over the last
    ``decay_steps`` steps, where it falls linearly towards 0 (``lr * (steps - step) / decay_steps``)."""
    start = steps - decay_steps
    return lr if decay_steps <= 0 or step < start else lr * (steps - step) / decay_steps
