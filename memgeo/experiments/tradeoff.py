"""The mitigation trade-off on the testbed: memorization rate against caption fidelity, and its Pareto front."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._util import atomic_write_text, spread
from ..mitigate.methods import METHODS
from ..mitigate.presets import PRESETS
from ..plotting import plot_tradeoff
from ..sampling import initial_noise
from ..testbed.labels import memorization_rate
from ..testbed.protocol import testbed_scoring_seeds
from ..testbed.criteria import criterion as criterion_of

__all__ = ["digit_classifier", "fidelity_classifier", "caption_fidelity", "tradeoff_configs", "TARGET",
           "target_shortfalls", "meets_target", "pareto_front", "mitigation_tradeoff", "write_tradeoff"]


def digit_classifier(images: torch.Tensor, targets):
    """A logistic-regression digit classifier on the scikit-learn digits (the fidelity stand-in for CLIP score)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=3000, C=1.0)
    clf.fit(images.reshape(len(images), -1).numpy(), np.asarray(targets))
    return clf


def fidelity_classifier(data, *, max_cells: int = 40000, seed: int = 0):
    """The digit classifier that scores a testbed's caption fidelity, trained on the cells its generations are drawn
    towards. Where canvases place the digits as they are (the small-data regime): :func:`digit_classifier` on the
    digits. Else on the warped cells of its training canvases (``data.bank``, each labelled by the digit it was
    warped from; at most ``max_cells`` drawn with ``seed``) by a one-hidden-layer perceptron: a linear classifier
    reads warped cells at about half accuracy (0.54 on held-out cells of the SD regime's testbed, the perceptron
    0.98)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    if data.bank.shape == data.digits.shape and torch.equal(data.bank, data.digits):
        return digit_classifier(data.digits, data.labels)
    labels = torch.full((len(data.bank),), -1, dtype=torch.long)
    labels[data.cell_ids.reshape(-1)] = data.labels[data.layout.reshape(-1)].long()
    known = torch.nonzero(labels >= 0).flatten()
    pick = known[torch.randperm(len(known), generator=torch.Generator().manual_seed(seed))[:max_cells]]
    clf = MLPClassifier((256,), max_iter=100, random_state=seed)
    with warnings.catch_warnings():  # a fixed budget of 100 epochs, not convergence: what counts is held-out accuracy
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(data.bank[pick].reshape(len(pick), -1).numpy(), labels[pick].numpy())
    return clf


def caption_fidelity(clf, canvases: torch.Tensor, text: str) -> np.ndarray:
    """Per generated canvas, the fraction of its four cells whose digit (by ``clf``) is the one the
    caption names at that position."""
    from ..testbed.canvas import canvas_cells, parse_caption

    want = np.array([d for d, _ in parse_caption(text)])
    cells = canvas_cells(canvases.float().clamp(-1, 1))
    pred = clf.predict(cells.reshape(-1, 64).numpy()).reshape(len(canvases), 4)
    return (pred == want[None]).mean(1)


def tradeoff_configs() -> tuple:
    """The trade-off's default sweep, ``(label, method, preset, strengths)``: every method's own rows
    (:attr:`~memgeo.mitigate.methods.MethodSpec.tradeoff`, read from the registry when called, so a method registered
    later is swept too), then the rows that read more than a method: ``"steer (flags given)"`` applies the memgeo
    steering action to every memorized prompt's samples and to no ordinary one (the action alone, as if the detector
    were perfect), and the calibrated rows stop at levels read off unlabelled reference prompts."""
    return (
        *((label, m.name, preset, strengths) for m in METHODS.values() for label, preset, strengths in m.tradeoff),
        ("steer (flags given)", "steer_given", "memgeo", (None,)),  # the action alone, on the memorized prompts only
        ("embedding (calibrated)", "embedding_reference", "memgeo", (None,)),  # stopping levels from reference prompts
        ("noise (calibrated)", "noise_reference", "memgeo", (10, 20)),
    )


#: The mitigation target (as the trade-off reads it): a memorized prompt's copies below ``rate`` and no copy of any
#: other training image instead, at least ``kept`` of its unmitigated fidelity, and ordinary prompts' fidelity within
#: ``ordinary`` of theirs.
TARGET = {"rate": 0.1, "kept": 0.8, "ordinary": 0.02}


def target_shortfalls(row: dict) -> dict:
    """How far a trade-off row is from :data:`TARGET`, each bound's shortfall as a fraction of the bound's scale (0
    where it is met, infinite where the row's value is not a number): the rate above 0.1 (over 0.1), the fidelity
    kept below 0.8 (over 0.8), the ordinary change beyond 0.02 either way (over 0.02), and the copies of another
    training image above 0 (over 0.1; a row that did not measure them: 0)."""
    values = {"rate": (row["memorization_rate"] - TARGET["rate"]) / TARGET["rate"],
              "other": row.get("other_copy_rate", 0.0) / TARGET["rate"],
              "kept": (TARGET["kept"] - row["fidelity_kept"]) / TARGET["kept"],
              "ordinary": (abs(row["ordinary_change"]) - TARGET["ordinary"]) / TARGET["ordinary"]}
    return {k: float("inf") if np.isnan(v) else max(0.0, v) for k, v in values.items()}


def meets_target(row: dict) -> bool:
    """Whether a trade-off row meets :data:`TARGET` (the rate strictly below its bound, no copy of another image)."""
    return (row["memorization_rate"] < TARGET["rate"] and row.get("other_copy_rate", 0.0) == 0.0
            and row["fidelity_kept"] >= TARGET["kept"] and abs(row["ordinary_change"]) <= TARGET["ordinary"])


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
    criterion: str = "verbatim",
) -> dict:
    """Memorization rate against caption fidelity for every mitigation across strengths, on the testbed.

    Memorization rate: fraction of generations of (generation-verified) memorized prompts that copy
    their training canvases, as the ground truth counts copies (:func:`memgeo.testbed.target_copies`; ``criterion``,
    verbatim or replication, picks the prompts and the copies, :data:`memgeo.testbed.criteria.CRITERIA`). Fidelity: the
    fraction of canvas cells whose digit (by :func:`fidelity_classifier`) is the one the caption names there, for
    memorized and ordinary prompts; the table gives it also as the share kept of the unmitigated fidelity.
    ``configs`` (default :func:`tradeoff_configs`) lists ``(label, method, preset, strengths)``;
    ``strengths`` ``{method: [values]}`` is a shorthand for memgeo-preset configurations.
    ``trained`` ``{label: testbed folder}`` adds training-time mitigation: each folder's model is
    generated from plainly, on the same prompts, seeds and classifier. Writes ``mitigation.md``
    (table and Pareto front), ``mitigation.json`` (the rows) and ``mitigation_tradeoff.png``.
    """
    from tqdm.auto import tqdm

    from ..mitigate import calibrate_steering
    from ..testbed import (
        load_testbed,
        target_copies,
        testbed_data,
        testbed_metadata,
        to_images,
    )
    from ..testbed.truth import nearest_ratios

    criterion_of(criterion)  # checked once, before any work
    meta = testbed_metadata(testbed_path)
    scoring = testbed_scoring_seeds(meta, seeds)  # never the seeds that made the labels, checked before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_testbed(testbed_path)
    truth = meta["ground_truth"]
    level = truth.get("criterion", {}).get("level", "canvas")  # the rule the ground truth counted copies by
    data = testbed_data(testbed_path)
    clf = fidelity_classifier(data)
    mem = [p for p in meta["prompts"] if p.get("targets") and memorization_rate(p, criterion) >= 0.5]
    ordinary = [p for p in meta["prompts"] if p["kind"] != "memorized" and memorization_rate(p, criterion) <= 0.1]
    if max_prompts is not None:
        mem = spread(mem, max_prompts // 2)
        ordinary = spread(ordinary, max_prompts - len(mem))
    x_T = initial_noise(model, scoring)
    calib = [p["text"] for p in meta["prompts"] if p["kind"] == "ordinary"][::8]  # unlabelled calibration prompts
    reference = calibrate_steering(model, calib, x_T, n_steps=n_steps, guidance_scale=guidance_scale)
    runs = _tradeoff_runs(model, configs, strengths, trained)
    ctx = _Sampling(x_T, n_steps, guidance_scale, reference, calib)
    rows = []
    bar = tqdm(total=len(runs) * (len(mem) + len(ordinary)), desc="mitigation", disable=not progress)
    for label, mdl, method, preset, value in runs:
        rate, replica, other, fid_m, fid_o, cost = [], [], [], [], [], []
        for group, prompts in (("mem", mem), ("ord", ordinary)):
            for i, p in enumerate(prompts):
                bar.update(1)
                samples, n_evals = _mitigated(ctx, mdl, method, preset, value, p["text"], i, group == "mem")
                canvases = to_images(samples.float())
                correct = caption_fidelity(clf, canvases, p["text"]).tolist()
                cost.append(n_evals)
                if group == "mem":
                    rate += target_copies(data, truth, p, canvases, criterion).tolist()
                    c = nearest_ratios(data, p, canvases, level=level)
                    replica += c["target_replica"].tolist()  # still its own image's replica (ratio < 1/2)
                    other += (c["copy"] & ~c["nearest_is_target"]).tolist()  # a copy of another image instead
                    fid_m += correct
                else:
                    fid_o += correct
        rows.append({"method": label, "strength": value, "memorization_rate": float(np.mean(rate)),
                     "replica_rate": float(np.mean(replica)), "other_copy_rate": float(np.mean(other)),
                     "fidelity_memorized": float(np.mean(fid_m)), "fidelity_ordinary": float(np.mean(fid_o)),
                     "evals_per_sample": float(np.mean(cost))})
    bar.close()
    settings = {"seeds": seeds, "n_steps": n_steps, "guidance_scale": guidance_scale, "n_memorized": len(mem),
                "presets": PRESETS,  # every method's options under both presets, as this run read them
                "n_ordinary": len(ordinary), "trained": {k: str(v) for k, v in (trained or {}).items()}}
    return write_tradeoff(rows, out, settings, print_fn=print_fn)


def _tradeoff_runs(model, configs, strengths, trained) -> list[tuple]:
    """``(label, model, method, preset, strength)`` of every run: each configuration at each strength, then each
    training-time mitigation's model generated from plainly."""
    from ..testbed import load_testbed

    if configs is None:
        configs = tradeoff_configs() if strengths is None else tuple(
            (m, m, "memgeo", tuple(v)) for m, v in strengths.items())
    runs = [(label, model, method, preset, value) for label, method, preset, values in configs for value in values]
    for label, folder in (trained or {}).items():
        other = load_testbed(folder)
        if other.event_shape != model.event_shape:
            raise ValueError(f"trained[{label!r}] is not a testbed of the same shape ({other.event_shape})")
        runs.append((label, other, "none", "memgeo", None))
    return runs


@dataclass(frozen=True)
class _Sampling:
    """What every mitigated generation of a trade-off shares: the scoring noise, the sampler's settings, the steering
    reference and the unlabelled calibration prompts."""

    x_T: torch.Tensor
    n_steps: int
    guidance_scale: float
    reference: object
    calib: list


def _mitigated(ctx: _Sampling, mdl, method: str, preset: str, value, text: str, i: int, memorized: bool):
    """``(samples, evaluations per sample)`` of one prompt under one method at one strength."""
    from ..mitigate import generate

    if method == "steer_given":  # the memgeo action on memorized prompts only: a perfect detector
        from ..mitigate import SteeringPolicy
        from ..sampling import ddim_sample

        policy = SteeringPolicy.from_preset(None, preset, ctx.n_steps, flags=torch.tensor(memorized))
        res = ddim_sample(mdl, text, ctx.x_T, n_steps=ctx.n_steps, guidance_scale=ctx.guidance_scale, policy=policy)
        return res.denoised, res.n_evals
    calibrated = method.endswith("_reference")  # the stopping level read off the unlabelled calibration prompts
    g = generate(mdl, text, ctx.x_T, method=method.removesuffix("_reference"), strength=value, n_steps=ctx.n_steps,
                 preset=preset, guidance_scale=ctx.guidance_scale, reference=ctx.reference, seed=i,
                 reference_prompts=ctx.calib if calibrated else None)
    return g.samples, g.n_evals


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
    head = ("| method | strength | memorization rate | replicas (ratio < 1/2) | copies of another image | "
            "fidelity (memorized) | fidelity kept | fidelity (ordinary) | ordinary fidelity change | UNet evals/sample "
            "| Pareto |")
    lines = [f"**mitigation on the testbed: {settings['n_memorized']} memorized and {settings['n_ordinary']} ordinary prompts, {seeds} seeds, "
             f"guidance {guidance_scale}, {n_steps} DDIM steps**", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        extra = " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in ("replica_rate", "other_copy_rate"))
        lines.append(f"| {r['method']} | {_strength(r)} | {r['memorization_rate']:.3f} | {extra} | {r['fidelity_memorized']:.3f} | "
                     f"{r['fidelity_kept']:.2f} | {r['fidelity_ordinary']:.3f} | {r['ordinary_change']:+.3f} | "
                     f"{r['evals_per_sample']:.0f} | {'yes' if any(r is f for f in front) else ''} |")
    target = [r for r in rows if meets_target(r)]
    lines += ["", "Fidelity kept: memorized-prompt fidelity over the unmitigated one. Pareto: no other row has both a "
                  "lower memorization rate and a higher memorized-prompt fidelity.",
              f"Rows meeting memorization rate < {TARGET['rate']}, no copy of another image, fidelity kept >= "
              f"{TARGET['kept']} and ordinary change "
              f"within {TARGET['ordinary']}: " + (", ".join(f"{r['method']} {_strength(r)}" for r in target) or "none"),
              "", "**By how much each method misses the target** (per method, its row nearest the target: the largest "
                  "of the four shortfalls, each as a fraction of its bound; 0 meets it):", "",
              "| method | nearest row | rate over the bound | copies of another image | fidelity kept short | "
              "ordinary change over the bound | shortfall |", "|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "none"):
        r, short = min(((r, target_shortfalls(r)) for r in rows if r["method"] == method),
                       key=lambda pair: max(pair[1].values()))
        lines.append(f"| {method} | {_strength(r)} | {short['rate']:.3f} | {short['other']:.3f} | {short['kept']:.3f} | "
                     f"{short['ordinary']:.3f} | {max(short.values()):.2f} |")
    table = "\n".join(lines)
    print_fn(table)
    atomic_write_text(out / "mitigation.md", table + "\n")
    atomic_write_text(out / "mitigation.json", json.dumps({"settings": settings, "rows": rows,
                                                           "pareto": [rows.index(f) for f in front]}, indent=1))
    plot_tradeoff(rows, out / "mitigation_tradeoff.png", front,
                  target=(TARGET["rate"], TARGET["kept"] * base["fidelity_memorized"]))
    print_fn(f"trade-off plot: {out / 'mitigation_tradeoff.png'}")
    return {"rows": rows, "table": table, "pareto": front}


def _strength(row: dict) -> str:
    return "-" if row["strength"] is None else f"{row['strength']:g}"
