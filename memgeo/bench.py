"""The detector leaderboard: every signal on (a) the canonical memorization mixture and (b) the testbed.

Per signal: AUROC, TPR@1%FPR and TPR@3%FPR (strict convention, named in the table), model
evaluations and JVPs per sample, and wall time per prompt, with time ratios to the guidance norm;
plus the per-step AUROC curves of the trajectory signals (kappa-delta, guidance norm and their
combination) as PNG plots. On the testbed, labels come from generation (``memgeo testbed truth``):
a prompt is memorized when at least half of its generations copy its training canvases, not
memorized when at most 10% do, whatever it was built as; prompts in between are left out and
counted. The testbed's tables add per-prompt metrics, one column per kind of memorization, the
Spearman correlation of each signal with the memorization rate, the caption-only baseline, and
the memorization rate against duplication.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .detect import (
    caption_baseline_row,
    rate_correlation,
    GuidanceNormTracker,
    KappaDeltaTracker,
    auroc,
    combined_score,
    ddim_sample,
    evaluate_signals,
    format_breakdown,
    format_leaderboard,
    initial_noise,
)

__all__ = [
    "testbed_labels", "testbed_kinds", "memorization_rate", "memorization_rates", "duplication_curve",
    "format_duplication_curve", "plot_duplication_curve", "trajectory_traces", "per_step_auroc", "trajectory_auroc", "run_leaderboards",
    "draw_trajectory_auroc", "plot_trajectory_auroc", "mitigation_tradeoff", "digit_classifier", "caption_fidelity",
    "preset_comparison", "format_preset_comparison",
]


def memorization_rate(p: dict) -> float:
    """A prompt's memorization rate from the testbed's ground truth: ``target_rate`` where the prompt
    has targets (its own training canvases), else ``copy_rate`` (copies of any training canvas)."""
    rate = p.get("target_rate", p.get("copy_rate"))
    if rate is None:
        raise ValueError("the testbed has no ground truth yet: run `memgeo testbed truth` first")
    return float(rate)


def memorization_rates(meta: dict, texts) -> list[float]:
    """Per prompt, the fraction of its generations that copy (graded ground truth from ``testbed truth``)."""
    by_text = {p["text"]: p for p in meta["prompts"]}
    return [memorization_rate(by_text[t]) for t in texts]


def testbed_labels(meta: dict, *, min_rate: float = 0.5, max_rate: float = 0.1) -> tuple[list[str], list[int], dict]:
    """Evaluation prompts and labels of the testbed, by generation.

    A prompt is memorized (1) when at least ``min_rate`` of its generations copy its training
    canvases, not memorized (0) when at most ``max_rate`` do, whatever its construction; prompts in
    between are left out and counted. The counts also say how each class was built.
    """
    if not 0 <= max_rate < min_rate <= 1:
        raise ValueError(f"need 0 <= max_rate < min_rate <= 1, got max_rate={max_rate}, min_rate={min_rate}")
    texts, labels = [], []
    counts = {"memorized": {}, "not memorized": {}, "left out (rate in between)": 0}
    for p in meta["prompts"]:
        rate = memorization_rate(p)
        kind = p.get("memorization") or p["kind"]
        if min_rate <= rate:
            label = "memorized"
        elif rate <= max_rate:
            label = "not memorized"
        else:
            counts["left out (rate in between)"] += 1
            continue
        counts[label][kind] = counts[label].get(kind, 0) + 1
        texts.append(p["text"])
        labels.append(int(label == "memorized"))
    return texts, labels, counts


def testbed_kinds(meta: dict, texts) -> list[str]:
    """Per prompt, its construction: ``"matching"``, ``"template"``, ``"local"``, ``"ordinary"`` or ``"heldout"``."""
    by_text = {p["text"]: p for p in meta["prompts"]}
    return [by_text[t].get("memorization") or by_text[t]["kind"] for t in texts]


def duplication_curve(meta: dict) -> list[dict]:
    """Memorization rate against duplication count, per kind: one row per (kind, count) with the
    number of prompts, their mean rate, and how many have a rate strictly between 0.1 and 0.9."""
    rows = {}
    for p in meta["prompts"]:
        if not p.get("targets"):
            continue
        key = (p.get("memorization") or p["kind"], int(p["duplication"]))
        rows.setdefault(key, []).append(memorization_rate(p))
    return [{"kind": k, "duplication": d, "prompts": len(r), "mean_rate": float(np.mean(r)),
             "graded": int(sum(0.1 < x < 0.9 for x in r))} for (k, d), r in sorted(rows.items())]


def format_duplication_curve(rows: list[dict]) -> str:
    head = "| kind | duplication | prompts | mean memorization rate | rate in (0.1, 0.9) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    lines += [f"| {r['kind']} | {r['duplication']} | {r['prompts']} | {r['mean_rate']:.3f} | {r['graded']} |" for r in rows]
    return "\n".join(lines)


def plot_duplication_curve(rows: list[dict], path) -> None:
    """Mean memorization rate against duplication count (log axis), one line per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        ax.plot([r["duplication"] for r in rs], [r["mean_rate"] for r in rs], "o-", label=kind)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("copies in training")
    ax.set_ylabel("memorization rate (generations copying)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("memorization against duplication, testbed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def trajectory_traces(model, conds, labels, *, seeds: int, n_steps: int, guidance_scale: float, n_directions: int = 4,
                      progress: bool = False):
    """kappa-delta and guidance norm at every DDIM step, ``[n_steps, N]`` each, and the labels ``[N]``.

    ``N = len(conds) * seeds``: every condition is generated from the same ``seeds`` initial noises.
    """
    if len(conds) == 0:
        raise ValueError("conds must hold at least one condition (it is empty)")
    if len(conds) != len(labels):
        raise ValueError(f"conds and labels must have the same length, got {len(conds)} and {len(labels)}")
    from tqdm.auto import tqdm

    x_T = initial_noise(model, seeds)
    kap, mag, y = [], [], []
    for i, (c, lab) in enumerate(tqdm(list(zip(conds, labels)), desc="trajectories", disable=not progress)):
        res = ddim_sample(model, c, x_T, n_steps=n_steps, guidance_scale=guidance_scale, trackers={
            "kappa": KappaDeltaTracker(n_directions, generator=torch.Generator().manual_seed(i)),
            "norm": GuidanceNormTracker()})
        kap.append(res.trace["kappa"])
        mag.append(res.trace["norm"])
        y += [lab] * seeds
    return torch.cat(kap, 1), torch.cat(mag, 1), np.array(y)


def per_step_auroc(kap: torch.Tensor, mag: torch.Tensor, y) -> dict[str, np.ndarray]:
    """Per-step AUROC of direction-only (kappa-delta), magnitude-only (guidance norm) and combined
    detectors, from :func:`trajectory_traces`."""
    y = np.asarray(y)
    neg = torch.as_tensor(y == 0)
    curves = {"direction (kappa-delta)": [], "magnitude (guidance norm)": [], "combined": []}
    for s in range(kap.shape[0]):
        comb = combined_score(kap[s], mag[s], reference=(kap[s][neg], mag[s][neg]))
        curves["direction (kappa-delta)"].append(auroc(y, (-kap[s]).numpy()))
        curves["magnitude (guidance norm)"].append(auroc(y, mag[s].numpy()))
        curves["combined"].append(auroc(y, comb.numpy()))
    return {k: np.array(v) for k, v in curves.items()}


def trajectory_auroc(model, conds, labels, *, seeds: int, n_steps: int, guidance_scale: float, n_directions: int = 4,
                     progress: bool = False):
    """Per-step AUROC of direction-only (kappa-delta), magnitude-only (guidance norm) and combined detectors."""
    kap, mag, y = trajectory_traces(model, conds, labels, seeds=seeds, n_steps=n_steps,
                                    guidance_scale=guidance_scale, n_directions=n_directions, progress=progress)
    return per_step_auroc(kap, mag, y)


def draw_trajectory_auroc(ax, curves: dict):
    """Draw per-step AUROC curves (from :func:`per_step_auroc`) on a matplotlib axis."""
    for name, v in curves.items():
        ax.plot(np.arange(1, len(v) + 1), v, label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("DDIM step (1 = pure noise)")
    ax.set_ylabel("AUROC (memorized vs ordinary)")
    ax.set_ylim(0.0, 1.02)
    ax.legend(fontsize=8)


def plot_trajectory_auroc(curves: dict, path, *, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    draw_trajectory_auroc(ax, curves)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def preset_comparison(model, texts, labels, *, seeds: int = 2, n_steps: int = 50, guidance_scale: float = 7.5,
                      signals=None, presets=("memgeo", "official"), progress: bool = True) -> list[dict]:
    """Every signal under every preset, and each anisotropy term alone, on labelled conditions.

    Returns one row per (signal, preset) with the AUROC per generation and per prompt (the score
    averaged over its seeds), the strict TPR@1%FPR per generation, and the evaluations per sample.
    Generation signals draw their random directions from a generator seeded by the prompt's index,
    the same under both presets; FLIPD's probe time comes from ``texts`` themselves (no labels read).
    """
    from tqdm.auto import tqdm

    from .detect import GENERATION_SIGNALS, GUIDED_SIGNALS, SIGNALS, detection_metrics

    if len(texts) == 0 or len(texts) != len(labels):
        raise ValueError(f"texts must be non-empty and as long as labels, got {len(texts)} and {len(labels)}")
    signals = tuple(signals or SIGNALS)
    x_T = initial_noise(model, seeds)
    y_gen = np.repeat(np.asarray(labels), seeds)
    rows = []
    bar = tqdm(total=len(signals) * len(presets) * len(texts), desc="presets", disable=not progress)
    for name in signals:
        for preset in presets:
            scores, parts, n_evals = [], {}, 0
            for i, c in enumerate(texts):
                kw = {"n_steps": n_steps, "preset": preset}
                if name in GUIDED_SIGNALS:
                    kw["guidance_scale"] = guidance_scale
                if name in GENERATION_SIGNALS:
                    kw["generator"] = torch.Generator().manual_seed(i)
                if name == "flipd":
                    kw["reference"] = list(texts)
                res = SIGNALS[name](model, c, x_T, **kw)
                scores.append(res.score.detach().double().numpy())
                n_evals = res.n_evals
                if name == "anisotropy":  # each term alone, oriented as the combination
                    for term in ("norm", "cos"):
                        parts.setdefault(term, []).append(res.extras[term].detach().double().numpy())
                bar.update(1)
            entries = [(name, scores)] + [(f"anisotropy: {t} term alone", v) for t, v in parts.items()]
            for label, vals in entries:
                s = np.stack(vals)  # [prompts, seeds]
                ok = np.isfinite(s).all(1)
                m = detection_metrics(y_gen[np.repeat(ok, seeds)], s[ok].ravel())
                rows.append({"signal": label, "preset": preset, "auroc_gen": m["auroc"], "tpr1_gen": m["tpr@1%fpr"],
                             "auroc_prompt": auroc(np.asarray(labels)[ok], s[ok].mean(1)),
                             "n_evals": n_evals if label == name else None, "undefined": int((~ok).sum())})
    bar.close()
    return rows


def format_preset_comparison(rows: list[dict], *, title: str = "") -> str:
    """A markdown table of :func:`preset_comparison` rows."""
    lines = [title, ""] if title else []
    lines += ["| signal | preset | AUROC (per generation) | TPR@1%FPR (strict, per generation) | AUROC (per prompt) | "
              "evaluations / sample |", "|---|---|---|---|---|---|"]
    for r in rows:
        ev = "" if r["n_evals"] is None else str(r["n_evals"])
        note = f" ({r['undefined']} prompts undefined)" if r["undefined"] else ""
        lines.append(f"| {r['signal']} | {r['preset']} | {r['auroc_gen']:.3f} | {r['tpr1_gen']:.3f} | "
                     f"{r['auroc_prompt']:.3f}{note} | {ev} |")
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
) -> dict:
    """Run both leaderboards, print them, and save tables and plots under ``out_dir``."""
    from .detect import SIGNALS
    from .gmm import ConditionalGaussianMixture
    from .scan import plot_roc
    from .sd.testbed import load_testbed, testbed_metadata

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    signals = tuple(signals or SIGNALS)
    results = {}

    mix = ConditionalGaussianMixture.memorization_scenario(dim=8, n_memorized=mixture_conditions,
                                                           n_generalizing=mixture_conditions, seed=0)
    conds, labels = list(range(mix.n_conditions)), mix.memorized.int().tolist()
    rows = evaluate_signals(mix, conds, labels, signals=signals, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                            progress=progress)
    table = format_leaderboard(rows, title=f"(a) canonical memorization mixture: {mixture_conditions} memorized + "
                                           f"{mixture_conditions} generalizing conditions, {seeds} seeds")
    print_fn(table + "\n")
    curves = trajectory_auroc(mix, conds, labels, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                              progress=progress)
    plot_trajectory_auroc(curves, out / "trajectory_auroc_mixture.png", title="per-step AUROC, mixture")
    results["mixture"] = {"table": table, "rows": rows, "curves": curves}

    model = load_testbed(testbed_path)
    meta = testbed_metadata(testbed_path)
    texts, labels, counts = testbed_labels(meta)
    if max_prompts is not None:  # keep both classes in a reduced run, spread over every kind
        pos = _spread([i for i, lab in enumerate(labels) if lab == 1], max_prompts // 2)
        neg = _spread([i for i, lab in enumerate(labels) if lab == 0], max_prompts - len(pos))
        keep = sorted(pos + neg)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    rows = evaluate_signals(model, texts, labels, signals=signals, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                            progress=progress)
    rows.append(caption_baseline_row(texts, labels, seeds=seeds))  # what the text alone gives away
    rates = memorization_rates(meta, texts)
    for r in rows:
        r.spearman = rate_correlation(r, rates, seeds=seeds)
    kinds = testbed_kinds(meta, texts)
    head = (f"(b) testbed, per generation: {sum(labels)} memorized vs {len(labels) - sum(labels)} not memorized "
            f"prompts (labels by generation), {seeds} seeds; prompts: {_format_counts(counts)}")
    table = format_leaderboard(rows, title=head)
    from .sd.canvas import KINDS

    groups = {k: [kd == k for kd in kinds] for k in KINDS if any(kd == k and y for kd, y in zip(kinds, labels))}
    breakdown = format_breakdown(rows, seeds=seeds, groups=groups,
                                 title="(b) testbed, per prompt (mean score over seeds), and per kind of memorization "
                                       "(that kind's memorized prompts against every non-memorized prompt)")
    curve = duplication_curve(meta)
    plot_duplication_curve(curve, out / "rate_vs_duplication.png")
    curve_table = format_duplication_curve(curve)
    print_fn(table + "\n\n" + breakdown + "\n")
    curves = trajectory_auroc(model, texts, labels, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                              progress=progress)
    plot_trajectory_auroc(curves, out / "trajectory_auroc_testbed.png", title="per-step AUROC, testbed")
    plot_roc({r.signal: {"labels": r.labels, "scores": r.scores, "auroc": r.auroc} for r in rows},
             out / "roc_testbed.png", title="ROC, testbed (per generation)")
    results["testbed"] = {"table": table, "breakdown": breakdown, "rows": rows, "curves": curves, "counts": counts,
                          "duplication_curve": curve}
    (out / "leaderboard.md").write_text("\n\n".join([
        results["mixture"]["table"], table, breakdown,
        "**(c) testbed ground truth: memorization rate against duplication** (rate_vs_duplication.png)", curve_table,
    ]) + "\n")
    print_fn(f"tables and plots in {out}/ (leaderboard.md, trajectory_auroc_*.png, roc_testbed.png, "
             "rate_vs_duplication.png)")
    return results


def _spread(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced (all of them when there are fewer)."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, max(n, 0)).round().astype(int)]


def _format_counts(counts: dict) -> str:
    parts = []
    for label in ("memorized", "not memorized"):
        inner = ", ".join(f"{k} {v}" for k, v in counts[label].items())
        parts.append(f"{label}: {inner or 'none'}")
    parts.append(f"left out (rate between): {counts['left out (rate in between)']}")
    return "; ".join(parts)


def digit_classifier(images: torch.Tensor, targets):
    """A logistic-regression digit classifier on the scikit-learn digits (the fidelity stand-in for CLIP score)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=3000, C=1.0)
    clf.fit(images.reshape(len(images), -1).numpy(), np.asarray(targets))
    return clf


def caption_fidelity(clf, canvases: torch.Tensor, text: str) -> np.ndarray:
    """Per generated canvas, the fraction of its four cells whose digit (by ``clf``) is the one the
    caption names at that position."""
    from .sd.canvas import canvas_cells, parse_caption

    want = np.array([d for d, _ in parse_caption(text)])
    cells = canvas_cells(canvases.float().clamp(-1, 1))
    pred = clf.predict(cells.reshape(-1, 64).numpy()).reshape(len(canvases), 4)
    return (pred == want[None]).mean(1)


#: The trade-off's configurations: (label, method, preset, strengths). ``"steer (flags given)"`` applies
#: the memgeo steering action to every memorized prompt's samples and to no ordinary one: the action
#: alone, as if the detector were perfect.
TRADEOFF_CONFIGS = (
    ("none", "none", "memgeo", (None,)),
    ("guidance", "guidance", "memgeo", (5.0, 3.0, 1.0)),
    ("embedding", "embedding", "memgeo", (0.7, 0.5, 0.3)),
    ("embedding (official)", "embedding", "official", (None,)),
    ("noise", "noise", "memgeo", (5, 10, 20)),
    ("noise (official SAIL)", "noise", "official", (None,)),
    ("steer", "steer", "memgeo", (4.0, 3.0, 2.0, 1.0)),
    ("steer (official)", "steer", "official", (4.0, 3.0, 2.0)),
    ("steer (flags given)", "steer_given", "memgeo", (None,)),
)


def pareto_front(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both axes: lower memorization rate and higher memorized-prompt
    fidelity (ordinary-prompt fidelity is reported beside, not traded)."""
    front = []
    for r in rows:
        beaten = any(o is not r and o["memorization_rate"] <= r["memorization_rate"]
                     and o["fidelity_memorized"] >= r["fidelity_memorized"]
                     and (o["memorization_rate"] < r["memorization_rate"] or o["fidelity_memorized"] > r["fidelity_memorized"])
                     for o in rows)
        if not beaten:
            front.append(r)
    return sorted(front, key=lambda r: r["memorization_rate"])


def mitigation_tradeoff(
    *,
    testbed_path=None,
    out_dir="bench_results",
    seeds: int = 4,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    max_prompts: int | None = None,
    configs=None,
    strengths: dict | None = None,
    trained: dict | None = None,
    print_fn=print,
    progress: bool = True,
) -> dict:
    """Memorization rate against caption fidelity for every mitigation across strengths, on the testbed.

    Memorization rate: fraction of generations of (generation-verified) memorized prompts that copy
    their training canvases, as the ground truth counts copies. Fidelity: the fraction of canvas
    cells whose digit (by a digit classifier) is the one the caption names there, for memorized and
    ordinary prompts; the table gives it also as the share kept of the unmitigated fidelity.
    ``configs`` (default :data:`TRADEOFF_CONFIGS`) lists ``(label, method, preset, strengths)``;
    ``strengths`` ``{method: [values]}`` is a shorthand for memgeo-preset configurations.
    ``trained`` ``{label: testbed folder}`` adds training-time mitigation: each folder's model is
    generated from plainly, on the same prompts, seeds and classifier. Writes ``mitigation.md``
    (table and Pareto front), ``mitigation.json`` (the rows) and ``mitigation_tradeoff.png``.
    """
    from tqdm.auto import tqdm

    from .mitigate import calibrate_steering, generate
    from .sd.testbed import generation_copies, load_testbed, testbed_data, testbed_metadata, to_images

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_testbed(testbed_path)
    meta = testbed_metadata(testbed_path)
    thr = meta["ground_truth"]["threshold"]
    data = testbed_data(testbed_path)
    clf = digit_classifier(data.digits, data.labels)
    mem = [p for p in meta["prompts"] if p.get("targets") and memorization_rate(p) >= 0.5]
    ordinary = [p for p in meta["prompts"] if p["kind"] != "memorized" and memorization_rate(p) <= 0.1]
    if max_prompts is not None:
        mem = _spread(mem, max_prompts // 2)
        ordinary = _spread(ordinary, max_prompts - len(mem))
    x_T = initial_noise(model, seeds)
    calib = [p["text"] for p in meta["prompts"] if p["kind"] == "ordinary"][::8]  # calibration set for steering
    reference = calibrate_steering(model, calib, x_T, n_steps=n_steps, guidance_scale=guidance_scale)
    if configs is None:
        configs = TRADEOFF_CONFIGS if strengths is None else tuple(
            (m, m, "memgeo", tuple(v)) for m, v in strengths.items())
    runs = [(label, model, method, preset, value) for label, method, preset, values in configs for value in values]
    for label, folder in (trained or {}).items():
        other = load_testbed(folder)
        if other.event_shape != model.event_shape:
            raise ValueError(f"trained[{label!r}] is not a testbed of the same shape ({other.event_shape})")
        runs.append((label, other, "none", "memgeo", None))

    def sample(mdl, method, preset, value, p, i, memorized):
        if method == "steer_given":  # the memgeo action on memorized prompts only: a perfect detector
            from .detect import ddim_sample
            from .detect.presets import resolve

            opts = resolve("steer", preset)
            act = int(round(float(opts["act_from"]) * n_steps))
            policy = (lambda st, tr: {"guidance_scale": float(opts["low_guidance"])} if st.index >= act else None) if memorized else None
            res = ddim_sample(mdl, p["text"], x_T, n_steps=n_steps, guidance_scale=guidance_scale, policy=policy)
            return res.denoised, res.n_evals
        g = generate(mdl, p["text"], x_T, method=method, strength=value, n_steps=n_steps, preset=preset,
                     guidance_scale=guidance_scale, reference=reference, seed=i)
        return g.samples, g.n_evals

    rows = []
    bar = tqdm(total=len(runs) * (len(mem) + len(ordinary)), desc="mitigation", disable=not progress)
    for label, mdl, method, preset, value in runs:
        rate, fid_m, fid_o, cost = [], [], [], []
        for group, prompts in (("mem", mem), ("ord", ordinary)):
            for i, p in enumerate(prompts):
                bar.update(1)
                samples, n_evals = sample(mdl, method, preset, value, p, i, group == "mem")
                canvases = to_images(samples.float())
                correct = caption_fidelity(clf, canvases, p["text"]).tolist()
                cost.append(n_evals)
                if group == "mem":
                    rate += generation_copies(data, p, canvases, thr)["target"].tolist()
                    fid_m += correct
                else:
                    fid_o += correct
        rows.append({"method": label, "strength": value, "memorization_rate": float(np.mean(rate)),
                     "fidelity_memorized": float(np.mean(fid_m)), "fidelity_ordinary": float(np.mean(fid_o)),
                     "evals_per_sample": float(np.mean(cost))})
    bar.close()
    settings = {"seeds": seeds, "n_steps": n_steps, "guidance_scale": guidance_scale, "n_memorized": len(mem),
                "n_ordinary": len(ordinary), "trained": {k: str(v) for k, v in (trained or {}).items()}}
    return write_tradeoff(rows, out, settings, print_fn=print_fn)


def write_tradeoff(rows: list[dict], out_dir, settings: dict, *, print_fn=print) -> dict:
    """The trade-off's table (``mitigation.md``, with the Pareto front and the rows meeting the
    steering target), ``mitigation.json`` and ``mitigation_tradeoff.png`` from its rows; the row
    ``"none"`` is the unmitigated reference of the fidelity kept and the ordinary change."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds, n_steps, guidance_scale = settings["seeds"], settings["n_steps"], settings["guidance_scale"]
    base = next(r for r in rows if r["method"] == "none")
    for r in rows:
        r["fidelity_kept"] = r["fidelity_memorized"] / base["fidelity_memorized"] if base["fidelity_memorized"] else float("nan")
        r["ordinary_change"] = r["fidelity_ordinary"] - base["fidelity_ordinary"]
    front = pareto_front(rows)
    head = ("| method | strength | memorization rate | fidelity (memorized) | fidelity kept | fidelity (ordinary) | "
            "ordinary fidelity change | UNet evals/sample | Pareto |")
    lines = [f"**mitigation on the testbed: {settings['n_memorized']} memorized and {settings['n_ordinary']} ordinary prompts, {seeds} seeds, "
             f"guidance {guidance_scale}, {n_steps} DDIM steps**", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['method']} | {_strength(r)} | {r['memorization_rate']:.3f} | {r['fidelity_memorized']:.3f} | "
                     f"{r['fidelity_kept']:.2f} | {r['fidelity_ordinary']:.3f} | {r['ordinary_change']:+.3f} | "
                     f"{r['evals_per_sample']:.0f} | {'yes' if any(r is f for f in front) else ''} |")
    target = [r for r in rows if r["memorization_rate"] < 0.1 and r["fidelity_kept"] >= 0.8 and abs(r["ordinary_change"]) <= 0.02]
    lines += ["", "Fidelity kept: memorized-prompt fidelity over the unmitigated one. Pareto: no other row has both a "
                  "lower memorization rate and a higher memorized-prompt fidelity.",
              "Rows meeting memorization rate < 0.1, fidelity kept >= 0.8 and ordinary change within 0.02: "
              + (", ".join(f"{r['method']} {_strength(r)}" for r in target) or "none")]
    table = "\n".join(lines)
    print_fn(table)
    (out / "mitigation.md").write_text(table + "\n")
    (out / "mitigation.json").write_text(json.dumps({"settings": settings, "rows": rows,
                                                      "pareto": [rows.index(f) for f in front]}, indent=1))
    plot_tradeoff(rows, out / "mitigation_tradeoff.png", front)
    print_fn(f"trade-off plot: {out / 'mitigation_tradeoff.png'}")
    return {"rows": rows, "table": table, "pareto": front}


def _strength(row: dict) -> str:
    return "-" if row["strength"] is None else f"{row['strength']:g}"


def plot_tradeoff(rows, path, front=(), ax=None):
    """Memorization rate against memorized-prompt fidelity, a line per method, the Pareto front dashed
    (into ``ax`` when given, else saved to ``path``)."""
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        ax.plot([r["memorization_rate"] for r in rs], [r["fidelity_memorized"] for r in rs], "o-", label=method, ms=4)
    if front:
        ax.plot([r["memorization_rate"] for r in front], [r["fidelity_memorized"] for r in front], "k--", lw=0.8,
                label="Pareto front")
    ax.set_xlabel("memorization rate (copies of the training canvases, memorized prompts)")
    ax.set_ylabel("fidelity: cells showing the captioned digit")
    ax.set_title("fidelity-memorization trade-off, testbed")
    ax.legend(fontsize=7)
    if own:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- explanation
def nearest_unmemorized_captions(text: str, captions) -> tuple[int, list[list[int]]]:
    """The captions of ``captions`` nearest to ``text`` in the canvas grammar, by the number of its 8
    words (4 thicknesses, 4 digits) that differ: ``(distance, [differing word indices per nearest caption])``."""
    from .sd.canvas import parse_caption

    own = [w for cell in parse_caption(text) for w in cell[::-1]]  # thickness, digit per position
    best, diffs = 9, []
    for c in captions:
        other = [w for cell in parse_caption(c) for w in cell[::-1]]
        d = [i for i in range(8) if own[i] != other[i]]
        if 0 < len(d) < best:
            best, diffs = len(d), [d]
        elif len(d) == best:
            diffs.append(d)
    return best, diffs


def explanation_hit_rate(model, data, prompts: list[dict] | None = None, *, seeds: int = 4, n_steps: int = 50,
                         signal: str = "guidance_norm", progress: bool = False) -> dict:
    """How often token attributions rank first a token that tells a memorized caption from its nearest
    non-memorized caption (the captions seen once in training).

    For each memorized prompt (default: every memorized-by-construction prompt of ``data``), the
    nearest single-copy captions (fewest differing words; ties all kept) give the distinguishing
    words; a hit is a top-ranked token among them, averaged over tied neighbours; chance is the
    share of distinguishing tokens among the prompt's tokens. Attributions: the gradient with
    respect to the input token embeddings, with respect to the prompt-embedding rows (Wen et al.'s
    released code), and leave-one-out. For local prompts, also the hit rate of the two words of
    the duplicated position. Returns per-method hit rates, chance, the mean Spearman correlation of
    each gradient ranking with leave-one-out, and per-prompt rows.
    """
    from collections import Counter

    from scipy.stats import spearmanr
    from tqdm.auto import tqdm

    from .explain import token_attribution
    from .sd.testbed import _mask_position

    prompts = prompts if prompts is not None else [p for p in data.prompts if p["kind"] == "memorized"]
    copies = Counter(c for _, c in data.items)
    singles = [c for c, k in copies.items() if k == 1]
    rows = []
    for p in tqdm(prompts, desc="explain", disable=not progress):
        tokens = model.prompt_tokens(p["text"])
        word_pos = [i for i, t in enumerate(tokens) if t != ","]  # token index of each of the 8 words
        if len(word_pos) != 8:
            raise ValueError(f"prompt {p['text']!r} does not tokenize into the grammar's 8 words")
        dist, diffs = nearest_unmemorized_captions(p["text"], singles)
        inp = token_attribution(model, p["text"], signal=signal, method="both", space="input", seeds=seeds, n_steps=n_steps)
        out = token_attribution(model, p["text"], signal=signal, method="gradient", space="output", seeds=seeds,
                                n_steps=n_steps)
        row = {"text": p["text"], "memorization": p.get("memorization"), "distance": dist, "n_neighbours": len(diffs),
               "chance": float(np.mean([len(d) / len(tokens) for d in diffs]))}
        ranks = {"gradient_input": inp.gradient, "gradient_output": out.gradient, "leave_one_out": inp.leave_one_out}
        for name, scores in ranks.items():
            top = int(np.argmax(scores))
            row[name] = float(np.mean([top in {word_pos[i] for i in d} for d in diffs]))
            if p.get("memorization") == "local":
                pos = _mask_position(p["mask"])
                row[name + "_local"] = float(top in {word_pos[2 * pos], word_pos[2 * pos + 1]})
                row["local_chance"] = 2 / len(tokens)
        row["spearman_input"] = float(spearmanr(inp.gradient, inp.leave_one_out).statistic)
        row["spearman_output"] = float(spearmanr(out.gradient, inp.leave_one_out).statistic)
        rows.append(row)
    summary = {"n_prompts": len(rows), "chance": float(np.mean([r["chance"] for r in rows])), "rows": rows}
    for name in ("gradient_input", "gradient_output", "leave_one_out"):
        summary[name] = float(np.mean([r[name] for r in rows]))
        local = [r[name + "_local"] for r in rows if name + "_local" in r]
        if local:
            summary[name + "_local"] = float(np.mean(local))
    local_chance = [r["local_chance"] for r in rows if "local_chance" in r]
    summary["local_chance"] = float(np.mean(local_chance)) if local_chance else None
    for name in ("input", "output"):
        summary["spearman_" + name] = float(np.nanmean([r["spearman_" + name] for r in rows]))
    return summary


def localization_auroc(model, prompts: list[dict], *, seeds: int = 8, n_steps: int = 50, guidance_scale: float = 7.5,
                       progress: bool = False) -> list[dict]:
    """Pixel AUROC of :func:`memgeo.explain.localize` and of the cross-attention baseline against each
    prompt's ``mask``, with the map's AUROC at every step (one row per prompt)."""
    from tqdm.auto import tqdm

    from .explain import cross_attention_map, localize, pixel_auroc, pixel_map

    rows = []
    for p in tqdm(prompts, desc="localize", disable=not progress):
        if "mask" not in p:
            raise ValueError(f"prompt {p.get('text')!r} has no mask: localization is scored on local-memorization prompts")
        loc = localize(model, p["text"], seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale)
        attn = cross_attention_map(model, p["text"], n_steps=n_steps, x_last=loc.x_last)
        rows.append({"text": p["text"], "rate": memorization_rate(p), "step": loc.step,
                     "map": pixel_auroc(loc.map, p["mask"]), "cross_attention": pixel_auroc(attn, p["mask"]),
                     "per_step": [pixel_auroc(pixel_map(model, m), p["mask"]) for m in loc.per_step]})
    return rows
