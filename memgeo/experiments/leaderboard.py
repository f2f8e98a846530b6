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
from ..detect import COST_REFERENCE, SIGNALS, bootstrap_metrics, detection_metrics, runnable_signals
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
from .front import cost_front, format_cost_front, is_free
from .rows import LeaderboardRow, _by_prompt, regroup
from .trajectory import trajectory_auroc

__all__ = ["LeaderboardRow", "evaluate_signals", "format_leaderboard", "caption_baseline_row", "rate_correlation", "regroup",
           "format_breakdown", "every_kind_targets", "format_every_kind_targets", "run_leaderboards"]


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


def format_leaderboard(rows: list[LeaderboardRow], *, title: str = "") -> str:
    """A markdown table of the rows (with 95% bootstrap intervals over prompts where computed), and
    cost ratios to the guidance norm where it is present."""
    base = next((r for r in rows if r.signal == COST_REFERENCE), None)
    conv = rows[0].convention if rows else "strict"
    head = f"| signal | AUROC | TPR@1%FPR ({conv}) | TPR@3%FPR ({conv}) | evals/sample | JVPs/sample | s/condition |"
    if base:
        head += " time / guidance norm |"
    graded = any(r.spearman is not None for r in rows)
    if graded:
        head += " Spearman with memorization rate |"
    lines = ([f"**{title}**", ""] if title else []) + [head, "|" + "---|" * (head.count("|") - 1)]

    def cell(r, key, value):
        if r.intervals is None:
            return f"{value:.3f}"
        lo, hi = r.intervals[key]
        return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"

    for r in rows:
        line = (f"| {r.signal} | {cell(r, 'auroc', r.auroc)} | {cell(r, 'tpr@1%fpr', r.tpr1)} | "
                f"{cell(r, 'tpr@3%fpr', r.tpr3)} | {_evals(r)} | {r.n_jvps} | {r.seconds:.3f} |")
        if base:
            line += f" {r.seconds / base.seconds:.1f} |"
        if graded:
            line += f" {'' if r.spearman is None else f'{r.spearman:.3f}'} |"
        lines.append(line)
    if any(r.intervals is not None for r in rows):
        lines += ["", "Brackets: 95% bootstrap intervals, resampling prompts within each class (1000 replicates)."]
    return "\n".join(lines)


def _evals(row: LeaderboardRow) -> str:
    """A row's evaluations per sample, with "0 extra" for a signal that reads a generation run anyway."""
    return f"{row.n_evals} (0 extra)" if is_free(row) else str(row.n_evals)


def format_breakdown(rows: list[LeaderboardRow], *, seeds: int, groups: dict, title: str = "") -> str:
    """Per-prompt metrics of every row, overall and on subsets of the positives.

    ``groups`` maps a column name (a kind of memorization, say) to a boolean mask over prompts
    selecting that subset's positives; every negative is kept in each column. Cells are per-prompt
    AUROC with its 95% bootstrap interval; the first two columns are per-prompt AUROC and
    TPR@1%FPR over every prompt.
    """
    conv = rows[0].convention if rows else "strict"
    names = list(groups)
    head = (f"| signal | AUROC per prompt | TPR@1%FPR per prompt ({conv}) | "
            + " | ".join(f"AUROC: {n}" for n in names) + " |")
    lines = ([f"**{title}**", ""] if title else []) + [head, "|" + "---|" * (head.count("|") - 1)]

    def ci(r, key, value):
        lo, hi = r.intervals[key]
        return f"{value:.3f} [{lo:.2f}, {hi:.2f}]"

    for r in rows:
        p = regroup(r, seeds=seeds, per_prompt=True)
        cells = [ci(p, "auroc", p.auroc), ci(p, "tpr@1%fpr", p.tpr1)]
        y = _by_prompt(r, seeds)[1]
        for n in names:
            keep = (y == 0) | np.asarray(groups[n], dtype=bool)
            if keep[y == 1].sum() == 0:
                cells.append("-")
                continue
            k = regroup(r, seeds=seeds, keep=keep, per_prompt=True)
            cells.append(ci(k, "auroc", k.auroc))
        lines.append(f"| {r.signal} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def every_kind_targets(rows: list[LeaderboardRow], *, seeds: int, groups: dict, max_evals: int = 4,
                       tolerance: float = 0.02) -> list[dict]:
    """The every-kind targets, per memgeo signal (one whose :data:`~memgeo.detect.SIGNALS` source is memgeo's) that
    costs at most ``max_evals`` model evaluations per sample (JVPs counted as evaluations): its per-prompt AUROC at
    least every published signal's overall, and within ``tolerance`` of the best published signal's on every kind
    (``groups``, as in :func:`format_breakdown`: a column's positives, every negative kept). The caption-only
    baseline is no signal and is left out."""

    def per_prompt(r, keep):  # AUROC of the mean score over seeds, on the prompts kept
        s, y = _by_prompt(r, seeds)
        return detection_metrics(y[keep], s.mean(1)[keep], convention=r.convention)["auroc"]

    signals = [r for r in rows if r.signal in SIGNALS]
    ours = [r for r in signals if SIGNALS[r.signal].own and r.n_evals + r.n_jvps <= max_evals]
    published = [r for r in signals if not SIGNALS[r.signal].own]
    if not ours or not published:
        return []
    y = _by_prompt(published[0], seeds)[1]
    columns = {"overall": np.ones_like(y, dtype=bool)}  # every prompt, then each kind's positives with every negative
    columns.update({name: (y == 0) | np.asarray(mask, dtype=bool) for name, mask in groups.items()
                    if ((y == 1) & np.asarray(mask, dtype=bool)).any()})
    best = {}  # per column, the best published signal and its AUROC: the same for every memgeo signal
    for name, keep in columns.items():
        aurocs = {o.signal: per_prompt(o, keep) for o in published}
        top = max(aurocs, key=aurocs.get)
        best[name] = (top, aurocs[top])
    out = []
    for r in ours:
        (top, theirs), mine = best["overall"], per_prompt(r, columns["overall"])
        row = {"signal": r.signal, "evals": r.n_evals + r.n_jvps, "overall": mine, "best_published": top,
               "best_published_auroc": theirs, "overall_met": mine >= theirs, "kinds": {}}
        for name in list(columns)[1:]:
            (top, theirs), mine = best[name], per_prompt(r, columns[name])
            row["kinds"][name] = {"auroc": mine, "best_published": top, "best_published_auroc": theirs,
                                  "met": mine >= theirs - tolerance}
        row["met"] = row["overall_met"] and all(k["met"] for k in row["kinds"].values())
        out.append(row)
    return out


def format_every_kind_targets(targets: list[dict], *, tolerance: float = 0.02) -> str:
    """:func:`every_kind_targets` as a table: per memgeo signal, its AUROC beside the best published one's."""
    if not targets:
        return "(no memgeo signal within the evaluation budget, or no published signal, to compare)"
    kinds = list(dict.fromkeys(k for t in targets for k in t["kinds"]))
    head = "| memgeo signal | evals | overall (best published) | " + " | ".join(kinds) + " | met |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for t in targets:
        cells = [f"{t['overall']:.3f} ({t['best_published']} {t['best_published_auroc']:.3f})"]
        for k in kinds:
            c = t["kinds"].get(k)
            cells.append("-" if c is None else f"{c['auroc']:.3f} ({c['best_published']} {c['best_published_auroc']:.3f})")
        lines.append(f"| {t['signal']} | {t['evals']} | " + " | ".join(cells) + f" | {'yes' if t['met'] else 'no'} |")
    lines.append(f"\nTargets: per-prompt AUROC at least every published signal's overall, and within {tolerance:g} of "
                 "the best published signal's on each kind.")
    return "\n".join(lines)


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
    from ..gmm import ConditionalGaussianMixture
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
    results = {}

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
    results["mixture"] = {"table": table, "rows": rows, "curves": curves}

    model = load_testbed(testbed_path)
    if max_prompts is not None:  # keep both classes in a reduced run, spread over every kind
        pos = spread([i for i, lab in enumerate(labels) if lab == 1], max_prompts // 2)
        neg = spread([i for i, lab in enumerate(labels) if lab == 0], max_prompts - len(pos))
        keep = sorted(pos + neg)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    rows = evaluate_signals(model, texts, labels, signals=signals, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                            progress=progress, seed_start=start)
    rows.append(caption_baseline_row(texts, labels, seeds=seeds))  # what the text alone gives away
    rates = memorization_rates(meta, texts, criterion)
    for r in rows:
        r.spearman = rate_correlation(r, rates, seeds=seeds)
    kinds = testbed_kinds(meta, texts)
    named = "" if crit.headline else f" ({crit.name} labels: ratio {crit.rule})"
    head = (f"(b) testbed{named}, per generation: {sum(labels)} memorized vs {len(labels) - sum(labels)} not memorized "
            f"prompts (labels by generation), {seeds} scoring seeds from {start} (labels from seeds "
            f"{_seed_range(label_seeds_of(meta))}); prompts: {_format_counts(counts)}")
    table = format_leaderboard(rows, title=head)
    from ..testbed.canvas import KINDS

    groups = {k: [kd == k for kd in kinds] for k in KINDS if any(kd == k and y for kd, y in zip(kinds, labels))}
    breakdown = format_breakdown(rows, seeds=seeds, groups=groups,
                                 title="(b) testbed, per prompt (mean score over seeds), and per kind of memorization "
                                       "(that kind's memorized prompts against every non-memorized prompt)")
    curve = duplication_curve(meta, criterion)
    plot_duplication_curve(curve, out / "rate_vs_duplication.png")
    curve_table = format_duplication_curve(curve)
    targets = every_kind_targets(rows, seeds=seeds, groups=groups)
    targets_table = format_every_kind_targets(targets)
    front = cost_front(rows, seeds=seeds)
    front_table = format_cost_front(front)
    plot_cost_front(front, out / "cost_front.png", title=f"cost against accuracy, testbed ({criterion} labels)")
    print_fn(table + "\n\n" + breakdown + "\n\n" + targets_table + "\n\n" + front_table + "\n")
    curves = trajectory_auroc(model, texts, labels, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                              progress=progress, seed_start=start)
    plot_trajectory_auroc(curves, out / "trajectory_auroc_testbed.png", title="per-step AUROC, testbed")
    plot_roc({r.signal: {"labels": r.labels, "scores": r.scores, "auroc": r.auroc} for r in rows},
             out / "roc_testbed.png", title="ROC, testbed (per generation)")
    results["testbed"] = {"table": table, "breakdown": breakdown, "rows": rows, "curves": curves, "counts": counts,
                          "cost_front": front,
                          "duplication_curve": curve, "every_kind_targets": targets}
    atomic_write_text(out / "leaderboard.md", "\n\n".join([
        results["mixture"]["table"], table, breakdown, "**(b) every-kind targets**", targets_table,
        "**(b) cost against accuracy** (cost_front.png)", front_table,
        "**(c) testbed ground truth: memorization rate against duplication** (rate_vs_duplication.png)", curve_table,
    ]) + "\n")
    folder = Path(testbed_path) if testbed_path is not None else TESTBED_DIR  # its UNet's SHA-256 names the model
    atomic_write_text(out / "leaderboard.json", json.dumps({
        "testbed": str(testbed_path) if testbed_path is not None else "embedded",
        "weights": weights_fingerprint(folder) if (folder / "unet").is_dir() else None, "criterion": criterion,
        "seeds": seeds, "scoring_seeds": list(range(start, start + seeds)), "label_seeds": label_seeds_of(meta),
        "n_steps": n_steps, "guidance_scale": guidance_scale, "texts": texts, "labels": labels,
        "kinds": kinds, "duplication": [by_text[t].get("duplication", 0) for t in texts],
        "hard_negative": [hard[t] for t in texts], "rows": [{"signal": r.signal, "n_evals": r.n_evals, "n_jvps": r.n_jvps, "seconds": r.seconds,
                                  "convention": r.convention, "scores": np.asarray(r.scores, dtype=float).tolist()}
                                 for r in rows],
    }))
    print_fn(f"tables and plots in {out}/ (leaderboard.md, leaderboard.json: every score, trajectory_auroc_*.png, "
             "roc_testbed.png, rate_vs_duplication.png, cost_front.png)")
    return results


def _seed_range(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds else "none"


def _format_counts(counts: dict) -> str:
    parts = []
    for label in ("memorized", "not memorized"):
        inner = ", ".join(f"{k} {v}" for k, v in counts[label].items())
        parts.append(f"{label}: {inner or 'none'}")
    parts.append(f"left out (rate between): {counts['left out (rate in between)']}")
    return "; ".join(parts)
