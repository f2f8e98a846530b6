"""The detector leaderboard: every signal on (a) the canonical memorization mixture and (b) the testbed.

Per signal: AUROC, TPR@1%FPR and TPR@3%FPR (strict convention, named in the table), model
evaluations and JVPs per sample, and wall time per prompt, with time ratios to the guidance norm;
plus the per-step AUROC curves of the trajectory signals (kappa-delta, guidance norm and their
combination) as PNG plots. On the testbed, labels come from generation: a memorized prompt counts
as memorized when most of its generations copy its duplicated target (``memgeo testbed truth``);
ordinary and held-out prompts are the negatives; memorized-by-construction prompts that the model
did not memorize are left out and counted.
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
    format_leaderboard,
    initial_noise,
)

__all__ = [
    "testbed_labels", "memorization_rates", "trajectory_traces", "per_step_auroc", "trajectory_auroc", "run_leaderboards",
    "draw_trajectory_auroc", "plot_trajectory_auroc", "mitigation_tradeoff", "digit_classifier",
    "preset_comparison", "format_preset_comparison",
]


def memorization_rates(meta: dict, texts) -> list[float]:
    """Per prompt, the fraction of its generations that copy (graded ground truth from ``testbed truth``):
    ``target_rate`` for duplicated prompts, ``copy_rate`` for the others."""
    by_text = {p["text"]: p for p in meta["prompts"]}
    out = []
    for t in texts:
        p = by_text[t]
        rate = p.get("target_rate", p.get("copy_rate")) if p.get("target") is not None else p.get("copy_rate")
        if rate is None:
            raise ValueError("the testbed has no ground truth yet: run `memgeo testbed truth` first")
        out.append(float(rate))
    return out


def testbed_labels(meta: dict, *, min_rate: float = 0.5) -> tuple[list[str], list[int], dict]:
    """Evaluation prompts and labels of the testbed from its stored ground truth."""
    texts, labels = [], []
    counts = {"memorized": 0, "not memorized (left out)": 0, "ordinary": 0, "heldout": 0}
    for p in meta["prompts"]:
        if p["kind"] == "memorized":
            rate = p.get("target_rate")
            if rate is None:
                raise ValueError("the testbed has no ground truth yet: run `memgeo testbed truth` first")
            if rate < min_rate:
                counts["not memorized (left out)"] += 1
                continue
            counts["memorized"] += 1
            texts.append(p["text"])
            labels.append(1)
        else:
            counts[p["kind"]] += 1
            texts.append(p["text"])
            labels.append(0)
    return texts, labels, counts


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
    if max_prompts is not None:  # keep both classes in a reduced run
        pos = [i for i, lab in enumerate(labels) if lab == 1][: max_prompts // 2]
        neg = [i for i, lab in enumerate(labels) if lab == 0][: max_prompts - len(pos)]
        keep = sorted(pos + neg)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    rows = evaluate_signals(model, texts, labels, signals=signals, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                            progress=progress)
    rows.append(caption_baseline_row(texts, labels, seeds=seeds))  # what the text alone gives away
    rates = memorization_rates(meta, texts)
    for r in rows:
        r.spearman = rate_correlation(r, rates, seeds=seeds)
    head = (f"(b) testbed: {sum(labels)} memorized (by generation) vs {len(labels) - sum(labels)} ordinary and held-out "
            f"prompts, {seeds} seeds; prompts: {counts}")
    table = format_leaderboard(rows, title=head)
    print_fn(table + "\n")
    curves = trajectory_auroc(model, texts, labels, seeds=seeds, n_steps=n_steps, guidance_scale=guidance_scale,
                              progress=progress)
    plot_trajectory_auroc(curves, out / "trajectory_auroc_testbed.png", title="per-step AUROC, testbed")
    plot_roc({r.signal: {"labels": r.labels, "scores": r.scores, "auroc": r.auroc} for r in rows},
             out / "roc_testbed.png", title="ROC, testbed (per generation)")
    results["testbed"] = {"table": table, "rows": rows, "curves": curves, "counts": counts}
    (out / "leaderboard.md").write_text(results["mixture"]["table"] + "\n\n" + table + "\n")
    print_fn(f"tables and plots in {out}/ (leaderboard.md, trajectory_auroc_*.png, roc_testbed.png)")
    return results


def preset_comparison(model, texts, labels, *, seeds: int = 2, n_steps: int = 50, guidance_scale: float = 7.5,
                      signals=None, presets=("memgeo", "official"), progress: bool = True) -> list[dict]:
    """Every signal under every preset, and each anisotropy term alone, on labelled conditions.

    Returns one row per (signal, preset) with the AUROC per generation and per prompt (the score
    averaged over its seeds), the strict TPR@1%FPR per generation, and the evaluations per sample.
    Generation signals draw their random directions from a generator seeded by the prompt's index,
    the same under both presets.
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
    lines += ["| signal | preset | AUROC (per generation) | TPR@1%FPR (strict, per generation) | AUROC (per prompt) | evaluations / sample |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        ev = "" if r["n_evals"] is None else str(r["n_evals"])
        note = f" ({r['undefined']} prompts undefined)" if r["undefined"] else ""
        lines.append(f"| {r['signal']} | {r['preset']} | {r['auroc_gen']:.3f} | {r['tpr1_gen']:.3f} | "
                     f"{r['auroc_prompt']:.3f}{note} | {ev} |")
    return "\n".join(lines)


def digit_classifier(images: torch.Tensor, targets):
    """A logistic-regression digit classifier on the scikit-learn digits (the fidelity stand-in for CLIP score)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=3000, C=1.0)
    clf.fit(images.reshape(len(images), -1).numpy(), np.asarray(targets))
    return clf


def mitigation_tradeoff(
    *,
    testbed_path=None,
    out_dir="bench_results",
    seeds: int = 4,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    max_prompts: int | None = None,
    strengths: dict | None = None,
    print_fn=print,
    progress: bool = True,
) -> dict:
    """Memorization rate against prompt fidelity for every mitigation across strengths, on the testbed.

    Memorization rate: fraction of generations for (generation-verified) memorized prompts whose
    nearest training image is their duplicated target within the ground-truth threshold.
    Fidelity: accuracy of a digit classifier on the generations (the target's digit for memorized
    prompts, the named digit for ordinary ones), reported for memorized and ordinary prompts.
    """
    from sklearn.datasets import load_digits

    from .mitigate import calibrate_steering, generate
    from .sd.testbed import build_testbed_data, load_testbed, testbed_metadata, to_images

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_testbed(testbed_path)
    meta = testbed_metadata(testbed_path)
    thr = meta["ground_truth"]["threshold"]
    data = build_testbed_data()
    flat = data.images.reshape(len(data.images), -1).double()
    clf = digit_classifier(data.images, load_digits().target)
    mem = [p for p in meta["prompts"] if p["kind"] == "memorized" and p.get("target_rate", 0) >= 0.5]
    ordinary = [p for p in meta["prompts"] if p["kind"] != "memorized"]
    if max_prompts is not None:
        mem, ordinary = mem[: max_prompts // 2], ordinary[:: max(1, len(ordinary) // max(1, max_prompts - max_prompts // 2))]
        ordinary = ordinary[: max_prompts - len(mem)]
    x_T = initial_noise(model, seeds)
    calib = [p["text"] for p in meta["prompts"] if p["kind"] == "ordinary"][::8]  # calibration set for steering
    reference = calibrate_steering(model, calib, x_T, n_steps=n_steps, guidance_scale=guidance_scale)
    strengths = strengths or {
        "none": [None], "guidance": [5.0, 3.0, 1.0], "embedding": [0.7, 0.5, 0.3], "noise": [5, 10, 20], "steer": [4.0, 3.0, 2.0],
    }
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(total=sum(len(v) for v in strengths.values()) * (len(mem) + len(ordinary)), desc="mitigation",
               disable=not progress)
    for method, values in strengths.items():
        for strength in values:
            rate, fid_m, fid_o, cost = [], [], [], []
            for group, prompts in (("mem", mem), ("ord", ordinary)):
                for i, p in enumerate(prompts):
                    bar.update(1)
                    g = generate(model, p["text"], x_T, method=method, strength=strength, n_steps=n_steps,
                                 guidance_scale=guidance_scale, reference=reference, seed=i)
                    pix = to_images(g.samples.float()).reshape(seeds, -1).clamp(-1, 1)
                    pred = clf.predict(pix.numpy())
                    correct = (pred == p["digit"]).tolist()
                    cost.append(g.n_evals)
                    if group == "mem":
                        d = torch.cdist(pix.double(), flat)
                        dist, nn = d.min(1)
                        rate += ((dist < thr) & (nn == p["target"])).tolist()
                        fid_m += correct
                    else:
                        fid_o += correct
            rows.append({"method": method, "strength": strength, "memorization_rate": float(np.mean(rate)),
                         "fidelity_memorized": float(np.mean(fid_m)), "fidelity_ordinary": float(np.mean(fid_o)),
                         "evals_per_sample": float(np.mean(cost))})
    base = next(r for r in rows if r["method"] == "none")
    head = ("| method | strength | memorization rate | fidelity (memorized) | fidelity (ordinary) | "
            "ordinary fidelity change | UNet evals/sample |")
    lines = [f"**mitigation on the testbed: {len(mem)} memorized and {len(ordinary)} ordinary prompts, {seeds} seeds, "
             f"guidance {guidance_scale}**", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s = "-" if r["strength"] is None else f"{r['strength']:g}"
        lines.append(f"| {r['method']} | {s} | {r['memorization_rate']:.3f} | {r['fidelity_memorized']:.3f} | "
                     f"{r['fidelity_ordinary']:.3f} | {r['fidelity_ordinary'] - base['fidelity_ordinary']:+.3f} | "
                     f"{r['evals_per_sample']:.0f} |")
    table = "\n".join(lines)
    print_fn(table)
    (out / "mitigation.md").write_text(table + "\n")
    _plot_tradeoff(rows, out / "mitigation_tradeoff.png")
    print_fn(f"trade-off plot: {out / 'mitigation_tradeoff.png'}")
    return {"rows": rows, "table": table}


def _plot_tradeoff(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        ax.plot([r["memorization_rate"] for r in rs], [r["fidelity_memorized"] for r in rs], "o-", label=method)
    ax.set_xlabel("memorization rate (copies of the target, memorized prompts)")
    ax.set_ylabel("fidelity: digit-classifier accuracy (memorized prompts)")
    ax.set_title("fidelity-memorization trade-off, testbed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
