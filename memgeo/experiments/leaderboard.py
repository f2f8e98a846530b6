"""Leaderboards: every signal's detection metrics and cost on a labelled set of conditions.

:func:`evaluate_signals` runs each signal of :data:`~memgeo.detect.SIGNALS` on every
(condition, seed), and reports per signal the AUROC, TPR@1%FPR and TPR@3%FPR (strict
convention, named in the output), model evaluations and JVPs per sample, and wall time per
condition. Detection is per generation (one score per (condition, seed)).

Times are measured as a benchmark, apart from the scoring pass: on one condition, each signal
runs once to warm up, then ``timing_repeats`` times, and the median is reported, all in one
process. Ratios to the guidance norm then do not depend on which signal ran first.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .._checks import check_int
from .._util import atomic_write_text, spread
from ..detect import SIGNALS, bootstrap_metrics, detection_metrics, runnable_signals
from ..plotting import plot_cost_front, plot_duplication_curve, plot_trajectory_auroc
from ..sampling import initial_noise
from ..testbed.labels import (
    duplication_curve,
    format_duplication_curve,
    is_hard_negative,
    memorization_rates,
    testbed_kinds,
    testbed_labels,
)
from ..testbed.protocol import label_seeds_of, testbed_scoring_seeds
from .front import cost_front, format_cost_front
from .leaderboard_tables import (compare_targets, every_kind_targets, floor_target, format_breakdown,
                                 format_every_kind_targets, format_leaderboard)
from .rows import LeaderboardRow, regroup
from .trajectory import trajectory_auroc

__all__ = ["LeaderboardRow", "evaluate_signals", "format_leaderboard", "caption_baseline_row", "rate_correlation", "regroup",
           "format_breakdown", "compare_targets", "floor_target", "every_kind_targets", "format_every_kind_targets",
           "run_leaderboards"]


CAPTION_BASELINE = "caption-only baseline"


def rate_correlation(row: LeaderboardRow, rates, *, seeds: int) -> float:
    """Spearman correlation of a row's per-prompt score (mean over its ``seeds``) with per-prompt
    memorization rates (the fraction of a prompt's generations that copy; graded ground truth)."""
    from scipy.stats import spearmanr

    per_prompt = np.asarray(row.scores, dtype=float).reshape(-1, seeds).mean(1)
    rates = np.asarray(rates, dtype=float).reshape(-1)
    if per_prompt.size != rates.size:
        raise ValueError(f"rates must hold one rate per prompt ({per_prompt.size}), got {rates.size}")
    return float(spearmanr(per_prompt, rates).statistic)


def evaluate_signals(
    model,
    conds: list,
    labels: list[int],
    *,
    signals=None,
    seeds: int = 8,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    options: dict | None = None,
    convention: str = "strict",
    timing_repeats: int = 3,
    progress: bool = False,
    seed_start: int = 0,
) -> list[LeaderboardRow]:
    """Every signal on every (condition, seed). ``options`` maps a signal name to extra keyword arguments.

    The noises are seeds ``seed_start .. seed_start + seeds - 1`` (a testbed is scored from
    :data:`~memgeo.testbed.protocol.SCORING_SEED_START`, apart from the seeds that made its labels).

    ``signals``: names of :data:`~memgeo.detect.SIGNALS` (default: every signal the model can run; those that
    read UNet cross-attention only where it has some).

    ``seconds`` per condition is the median of ``timing_repeats`` warmed-up runs on the first condition.
    """
    from tqdm.auto import tqdm

    if len(conds) == 0:
        raise ValueError("conds must hold at least one condition (it is empty)")
    if len(conds) != len(labels):
        raise ValueError(f"conds and labels must have the same length, got {len(conds)} and {len(labels)}")
    options = options or {}
    x_T = initial_noise(model, list(range(seed_start, seed_start + seeds)))
    if signals is None:
        signals = runnable_signals(model)
    unknown = [name for name in signals if name not in SIGNALS]
    if unknown:
        raise ValueError(f"unknown signal(s) {unknown}; choose from {sorted(SIGNALS)}")
    check_int("timing_repeats", timing_repeats)
    rows = []
    bar = tqdm(total=len(signals) * len(conds), desc="signals", disable=not progress)
    for name in signals:
        scores, y, res = [], [], None

        fixed = SIGNALS[name].fixed_options(model, conds, guidance_scale=guidance_scale, n_steps=n_steps,
                                            options=options.get(name, {}))  # FLIPD: one probe time for all

        def kwargs(i):
            return {**SIGNALS[name].options(n_steps=n_steps, guidance_scale=guidance_scale,
                                            generator=torch.Generator().manual_seed(i)), **fixed}

        for i, (c, lab) in enumerate(zip(conds, labels)):
            res = SIGNALS[name](model, c, x_T, **kwargs(i))
            scores.append(res.score.detach().double().cpu().numpy())
            y += [int(lab)] * seeds
            bar.update(1)
        times = []
        for _ in range(timing_repeats + 1):  # the first run warms up and is not counted
            t0 = time.perf_counter()
            SIGNALS[name](model, conds[0], x_T, **kwargs(0))
            times.append(time.perf_counter() - t0)
        s = np.concatenate(scores)
        y = np.array(y)
        m = detection_metrics(y, s, convention=convention)
        ci = bootstrap_metrics(y, s, groups=np.repeat(np.arange(len(conds)), seeds), convention=convention)
        rows.append(LeaderboardRow(name, m["auroc"], m["tpr@1%fpr"], m["tpr@3%fpr"], res.n_evals, res.n_jvps,
                                   float(np.median(times[1:])), convention, s, y, ci))
    bar.close()
    return rows


def caption_baseline_row(texts, labels, *, seeds: int = 1, convention: str = "strict") -> LeaderboardRow:
    """The caption-only classifier (:func:`memgeo.detect.caption_baseline`) as a leaderboard row.

    Its out-of-fold score of each prompt stands for every one of its ``seeds`` generations; it uses
    no model (0 evaluations).
    """
    from ..detect.confound import caption_baseline

    t0 = time.perf_counter()
    res = caption_baseline(texts, labels)
    seconds = (time.perf_counter() - t0) / len(texts)
    s = np.repeat(res["scores"], seeds)
    y = np.repeat(np.asarray(labels, dtype=int), seeds)
    m = detection_metrics(y, s, convention=convention)
    ci = bootstrap_metrics(y, s, groups=np.repeat(np.arange(len(texts)), seeds), convention=convention)
    return LeaderboardRow(CAPTION_BASELINE, m["auroc"], m["tpr@1%fpr"], m["tpr@3%fpr"], 0, 0, seconds, convention, s, y, ci)


def run_leaderboards(
    *,
    testbed_path=None,
    out_dir="bench_results",
    seeds: int = 4,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    mixture_conditions: int = 20,
    max_prompts: int | None = None,
    signals=None,
    print_fn=print,
    progress: bool = True,
    criterion: str = "verbatim",
) -> dict:
    """Run both leaderboards, print them, and save tables and plots under ``out_dir``. ``criterion``
    (:data:`memgeo.testbed.criteria.CRITERIA`): the testbed's labels, verbatim copies or the replication level (named
    in the titles)."""
    from ..plotting import plot_roc
    from ..testbed import TESTBED_DIR, load_testbed, testbed_metadata, weights_fingerprint
    from ..testbed.criteria import criterion as criterion_of

    crit = criterion_of(criterion)  # checked once, before any work
    meta = testbed_metadata(testbed_path)
    texts, labels, counts = testbed_labels(meta, criterion=criterion)  # the labels exist, before any work
    start = testbed_scoring_seeds(meta, seeds)[0]  # scoring seeds apart from the label seeds, before any work
    by_text = {p["text"]: p for p in meta["prompts"]}
    hard = {t: is_hard_negative(by_text[t]) for t in texts}  # the ground truth has what the flags need, before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    signals = tuple(signals or SIGNALS)
    run = dict(seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale, progress=progress)
    results = {"mixture": _mixture_leaderboard(out, mixture_conditions, signals, print_fn, **run)}

    model = load_testbed(testbed_path)
    if max_prompts is not None:  # keep both classes in a reduced run, spread over every kind
        pos = spread([i for i, lab in enumerate(labels) if lab == 1], max_prompts // 2)
        neg = spread([i for i, lab in enumerate(labels) if lab == 0], max_prompts - len(pos))
        keep = sorted(pos + neg)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    rows = evaluate_signals(model, texts, labels, signals=signals, seed_start=start, **run)
    rows.append(caption_baseline_row(texts, labels, seeds=seeds))  # what the text alone gives away
    rates = memorization_rates(meta, texts, criterion)
    for r in rows:
        r.spearman = rate_correlation(r, rates, seeds=seeds)
    kinds = testbed_kinds(meta, texts)
    named = "" if crit.headline else f" ({crit.name} labels: ratio {crit.rule})"
    head = (f"(b) testbed{named}, per generation: {sum(labels)} memorized vs {len(labels) - sum(labels)} not memorized "
            f"prompts (labels by generation), {seeds} scoring seeds from {start} (labels from seeds "
            f"{_seed_range(label_seeds_of(meta))}); prompts: {_format_counts(counts)}")
    tb = _testbed_tables(out, rows, kinds, labels, meta, criterion, head, seeds, [hard[t] for t in texts])
    print_fn(tb["table"] + "\n\n" + tb["breakdown"] + "\n\n" + tb["targets_table"] + "\n\n" + tb["front_table"] + "\n")
    curves = trajectory_auroc(model, texts, labels, seed_start=start, **run)
    plot_trajectory_auroc(curves, out / "trajectory_auroc_testbed.png", title="per-step AUROC, testbed")
    plot_roc({r.signal: {"labels": r.labels, "scores": r.scores, "auroc": r.auroc} for r in rows},
             out / "roc_testbed.png", title="ROC, testbed (per generation)")
    results["testbed"] = {"table": tb["table"], "breakdown": tb["breakdown"], "rows": rows, "curves": curves,
                          "counts": counts, "cost_front": tb["front"], "duplication_curve": tb["curve"],
                          "every_kind_targets": tb["targets"], "floor_target": tb["floor"]}
    atomic_write_text(out / "leaderboard.md", "\n\n".join([
        results["mixture"]["table"], tb["table"], tb["breakdown"], "**(b) every-kind targets**", tb["targets_table"],
        "**(b) cost against accuracy** (cost_front.png)", tb["front_table"],
        "**(c) testbed ground truth: memorization rate against duplication** (rate_vs_duplication.png)",
        tb["curve_table"],
    ]) + "\n")
    folder = Path(testbed_path) if testbed_path is not None else TESTBED_DIR  # its UNet's SHA-256 names the model
    atomic_write_text(out / "leaderboard.json", json.dumps({
        "testbed": str(testbed_path) if testbed_path is not None else "embedded",
        "weights": weights_fingerprint(folder) if (folder / "unet").is_dir() else None, "criterion": criterion,
        "seeds": seeds, "scoring_seeds": list(range(start, start + seeds)), "label_seeds": label_seeds_of(meta),
        "n_steps": n_steps, "guidance_scale": guidance_scale, "texts": texts, "labels": labels,
        "kinds": kinds, "duplication": [by_text[t].get("duplication", 0) for t in texts],
        "hard_negative": [hard[t] for t in texts],
        "rows": [{"signal": r.signal, "n_evals": r.n_evals, "n_jvps": r.n_jvps, "seconds": r.seconds,
                  "convention": r.convention, "scores": np.asarray(r.scores, dtype=float).tolist()} for r in rows],
    }))
    print_fn(f"tables and plots in {out}/ (leaderboard.md, leaderboard.json: every score, trajectory_auroc_*.png, "
             "roc_testbed.png, rate_vs_duplication.png, cost_front.png)")
    return results


def _mixture_leaderboard(out: Path, mixture_conditions: int, signals, print_fn, *, seeds, n_steps, guidance_scale,
                         progress) -> dict:
    """Leaderboard (a): every signal that runs on a mixture, on the canonical memorization mixture."""
    from ..gmm import ConditionalGaussianMixture

    mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=mixture_conditions,
                                                           n_generalizing=mixture_conditions, seed=0)
    conds, mix_labels = list(range(mix.n_conditions)), mix.memorized.int().tolist()
    rows = evaluate_signals(mix, conds, mix_labels, signals=runnable_signals(mix, signals), seeds=seeds, n_steps=n_steps,
                            guidance_scale=guidance_scale, progress=progress)
    table = format_leaderboard(rows, title=f"(a) canonical memorization mixture: {mixture_conditions} memorized + "
                                           f"{mixture_conditions} generalizing conditions, {seeds} seeds")
    print_fn(table + "\n")
    curves = trajectory_auroc(mix, conds, mix_labels, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                              progress=progress)
    plot_trajectory_auroc(curves, out / "trajectory_auroc_mixture.png", title="per-step AUROC, mixture")
    return {"table": table, "rows": rows, "curves": curves}


def _testbed_tables(out: Path, rows, kinds, labels, meta, criterion: str, head: str, seeds: int, hard: list) -> dict:
    """Leaderboard (b)'s tables and figures from its rows: the table, the per-kind breakdown, the every-kind targets,
    the cost front, and (c) the ground truth's rate against duplication."""
    from ..testbed.canvas import KINDS

    groups = {k: [kd == k for kd in kinds] for k in KINDS if any(kd == k and y for kd, y in zip(kinds, labels))}
    breakdown = format_breakdown(rows, seeds=seeds, groups=groups,
                                 title="(b) testbed, per prompt (mean score over seeds), and per kind of memorization "
                                       "(that kind's memorized prompts against every non-memorized prompt)")
    curve = duplication_curve(meta, criterion)
    plot_duplication_curve(curve, out / "rate_vs_duplication.png")
    targets = every_kind_targets(rows, seeds=seeds, groups=groups, hard=hard)
    front = cost_front(rows, seeds=seeds)
    plot_cost_front(front, out / "cost_front.png", title=f"cost against accuracy, testbed ({criterion} labels)")
    floor = floor_target(front)
    return {"table": format_leaderboard(rows, title=head), "breakdown": breakdown, "curve": curve,
            "curve_table": format_duplication_curve(curve), "targets": targets, "floor": floor,
            "targets_table": format_every_kind_targets(targets, floor=floor), "front": front,
            "front_table": format_cost_front(front)}


def _seed_range(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds else "none"


def _format_counts(counts: dict) -> str:
    parts = []
    for label in ("memorized", "not memorized"):
        inner = ", ".join(f"{k} {v}" for k, v in counts[label].items())
        parts.append(f"{label}: {inner or 'none'}")
    parts.append(f"left out (rate between): {counts['left out (rate in between)']}")
    return "; ".join(parts)
