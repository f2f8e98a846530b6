"""A benchmark protocol's models against its targets: counts per kind, hard negatives, stability across snapshots.

    python benchmarks/bench_protocol.py --models DIR [DIR ...] [--snapshots DIR ...] [--out FILE.md]

Each DIR is a protocol run's model folder whose ``testbed.json`` holds ground truth from the protocol's label seeds
(``memgeo testbed truth --protocol sd-bench``). Per model, at the protocol's criterion and label thresholds: the
verbatim-memorized prompts of each kind, the graded ones, the hard negatives (duplicated, never a replica of their
image), the ordinary and held-out prompts not memorized, and whether each target is met; per rung, the share of the
draws against the memorization rate, and per kind what a missed target would take (the curve, its onset and an
extrapolation at the model's own rate; ``NAME_share.png`` beside ``--out``). ``--snapshots``: for the model of the
same position, its earlier snapshots (each labelled the same way); the share of duplicated prompts whose label
(memorized / graded / not memorized) is the same at the final step and at the snapshot, and the counts per kind
against training steps. Nothing here selects a model or a snapshot: the protocol fixed them.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from memgeo.testbed import KINDS, testbed_metadata
from memgeo.testbed.criteria import criterion
from memgeo.testbed.labels import is_hard_negative
from memgeo.testbed.protocol import load_protocol

#: The smallest setting, run by the test suite; None: it needs protocol models with ground truth.
SMOKE = None


def label_of(p: dict, crit) -> str:
    """A prompt's label under the criterion's thresholds: memorized, not memorized, or graded between."""
    return crit.label(crit.prompt_rate(p))


def model_counts(meta: dict, crit) -> dict:
    """Counts of a labelled model against the protocol's targets."""
    dup = [p for p in meta["prompts"] if p["kind"] == "memorized"]
    plain = [p for p in meta["prompts"] if p["kind"] in ("ordinary", "heldout")]
    out = {kind: sum(1 for p in dup if p["memorization"] == kind and label_of(p, crit) == "memorized") for kind in KINDS}
    out.update({"graded": sum(label_of(p, crit) == "graded" for p in dup),
                "hard negatives": sum(is_hard_negative(p) for p in dup),
                "ordinary and held-out not memorized": sum(label_of(p, crit) == "not memorized" for p in plain),
                "ordinary and held-out": len(plain)})
    return out


def stability(final: dict, earlier: dict, crit) -> float:
    """The share of duplicated prompts whose label is the same in both ground truths."""
    before = {p["text"]: label_of(p, crit) for p in earlier["prompts"] if p["kind"] == "memorized"}
    same = [label_of(p, crit) == before[p["text"]] for p in final["prompts"] if p["kind"] == "memorized"]
    return sum(same) / len(same)


def share_curve(meta: dict, crit) -> list[dict]:
    """Per duplicated prompt: kind, images its draws spread over (a template caption's canvases), share of the draws
    per image, memorization rate (sorted by kind and share)."""
    n_items = meta["n_training_items"]
    rows = []
    for p in meta["prompts"]:
        if p["kind"] == "memorized":
            images = len(p["targets"]) if p["memorization"] == "template" else 1
            rows.append({"kind": p["memorization"], "images": images, "share": p["duplication"] / n_items / images,
                         "rate": crit.prompt_rate(p)})
    return sorted(rows, key=lambda r: (r["kind"], r["share"]))


def what_it_takes(curve: list[dict], crit, target: int) -> dict:
    """Per kind, read off the share curve: how many rungs memorize, the share from which every rung does (the onset;
    None where the top rung does not), and, where fewer than ``target`` memorize, an extrapolation at this model's
    observed rate: the fraction ``p`` of rungs memorized at or above the lowest memorized share, the rungs that range
    would need (``ceil(target / p)``) and the extra share of the draws they would take at the range's mean share
    (counted per image, so a template prompt's canvases count each)."""
    out = {}
    for kind in KINDS:
        rows = [r for r in curve if r["kind"] == kind]
        if not rows:
            continue
        mem = [crit.label(r["rate"]) == "memorized" for r in rows]
        # the smallest share from which every rung memorizes (rungs of equal share judged together)
        onset = min((s for s in {r["share"] for r in rows}
                     if all(m for r, m in zip(rows, mem) if r["share"] >= s)), default=None)
        row = {"rungs": len(rows), "memorized": sum(mem), "onset": onset, "needed": None, "extra_share": None}
        if 0 < sum(mem) < target:
            lo = min(r["share"] for r, m in zip(rows, mem) if m)
            span = [(r, m) for r, m in zip(rows, mem) if r["share"] >= lo]
            p = sum(m for _, m in span) / len(span)
            needed = math.ceil(target / p)
            mean_share = sum(r["share"] for r, _ in span) / len(span)
            row.update(range_from=lo, rate_in_range=p, needed=needed,
                       extra_share=(needed - len(span)) * mean_share * sum(r["images"] for r, _ in span) / len(span))
        out[kind] = row
    return out


def plot_share_curves(curves: dict, path: Path) -> None:
    """Memorization rate against the share of the draws per image (log axis), one colour per kind, one marker per
    model, the label thresholds dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from memgeo.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for j, (model, curve) in enumerate(curves.items()):
        for c, kind in enumerate(KINDS):
            rs = [r for r in curve if r["kind"] == kind]
            ax.plot([r["share"] for r in rs], [r["rate"] for r in rs], "os^D"[j % 4] + "-", color=f"C{c}", ms=4,
                    alpha=0.8, label=f"{kind}, {Path(model).name}")
    for y in (0.1, 0.5):
        ax.axhline(y, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(xmax=1, decimals=2))
    ax.set_xticks([0.0002, 0.0005, 0.001, 0.002, 0.005])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("share of the training draws per image")
    ax.set_ylabel("verbatim rate (label seeds)")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=6)
    save_figure(fig, path, dpi=120)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="sd-bench")
    ap.add_argument("--models", nargs="+", required=True, help="protocol runs' model folders, labelled")
    ap.add_argument("--snapshots", nargs="*", default=[],
                    help="earlier snapshots as MODEL_INDEX:FOLDER (e.g. 0:runs/sd-bench-primary-1/snapshots/step-16000)")
    ap.add_argument("--out", help="also write the tables to this markdown file (and a .json beside it)")
    args = ap.parse_args(argv)
    proto = load_protocol(args.protocol)
    crit = criterion(proto["labels"]["criterion"])
    targets = proto["targets"]
    lines = [f"Protocol {args.protocol}: labels by the {crit.name} criterion from {proto['labels']['seeds'][1]} label "
             f"seeds (memorized at rate >= {crit.min_rate}, not memorized at <= {crit.max_rate}).", "",
             "| model | " + " | ".join(KINDS) + " | graded | hard negatives | ordinary + held-out not memorized | "
             "targets met |", "|" + "---|" * (len(KINDS) + 5)]
    result = {"protocol": args.protocol, "models": {}}
    metas = [testbed_metadata(m) for m in args.models]
    for folder, meta in zip(args.models, metas):
        seeds = (meta.get("ground_truth") or {}).get("seeds")
        if seeds != proto["labels"]["seeds"][1]:
            raise ValueError(f"{folder}: ground truth from {seeds} seeds, not the protocol's "
                             f"{proto['labels']['seeds'][1]}: run `memgeo testbed truth --protocol {args.protocol}`")
        c = model_counts(meta, crit)
        met = (all(c[k] >= targets["memorized_per_kind"] for k in KINDS) and c["hard negatives"] >= targets["hard_negatives"]
               and c["ordinary and held-out not memorized"] >= targets["ordinary_and_heldout"])
        lines.append(f"| {folder} | " + " | ".join(str(c[k]) for k in KINDS) + f" | {c['graded']} | "
                     f"{c['hard negatives']} | {c['ordinary and held-out not memorized']} of {c['ordinary and held-out']}"
                     f" | {'yes' if met else 'no'} |")
        result["models"][folder] = {"counts": c, "targets_met": met, "share_curve": share_curve(meta, crit)}
    lines += ["", "Memorization against share (per kind, from each model's ladder): rungs memorized, the share from "
                  "which every rung memorizes (the onset), and where fewer than the target memorize, what the target "
                  "would take at the model's own rate over its memorizing range (an extrapolation, not a measurement):",
              "", "| model | kind | memorized / rungs | onset share | rate in range | rungs needed | extra share of "
                  "draws |", "|---|---|---|---|---|---|---|"]
    for folder in args.models:
        takes = what_it_takes(result["models"][folder]["share_curve"], crit, targets["memorized_per_kind"])
        result["models"][folder]["what_it_takes"] = takes
        for kind, t in takes.items():
            onset = f"{t['onset']:.3%}" if t["onset"] is not None else "none"
            more = (f"{t['rate_in_range']:.2f} from {t['range_from']:.3%} | {t['needed']} | {t['extra_share']:.2%}"
                    if t["needed"] is not None else "- | - | -")
            lines.append(f"| {folder} | {kind} | {t['memorized']} / {t['rungs']} | {onset} | {more} |")
    if args.snapshots:
        snaps = []
        for spec in args.snapshots:
            index, _, folder = spec.partition(":")
            snap = testbed_metadata(folder)
            if (snap.get("ground_truth") or {}).get("seeds") != proto["labels"]["seeds"][1]:
                raise ValueError(f"{folder}: a snapshot labelled from {(snap.get('ground_truth') or {}).get('seeds')} "
                                 f"seeds, not the protocol's {proto['labels']['seeds'][1]}")
            snaps.append((int(index), folder, snap))
        lines += ["", f"Stability (target: {proto['labels']['stability_target']:.0%} of duplicated prompts keep their "
                      "label):", "", "| model | snapshot | labels kept |", "|---|---|---|"]
        for index, folder, snap in snaps:
            model = args.models[index]
            kept = stability(metas[index], snap, crit)
            lines.append(f"| {model} | {folder} | {kept:.2f} |")
            result["models"][model].setdefault("stability", {})[folder] = kept
        lines += ["", "Memorized prompts per kind against training steps (each snapshot labelled like its model):", "",
                  "| model | step | " + " | ".join(KINDS) + " | hard negatives |", "|" + "---|" * (len(KINDS) + 3)]
        for index, model in enumerate(args.models):
            points = [snap for i, _, snap in snaps if i == index] + [metas[index]]
            for meta in sorted(points, key=lambda m: m["steps"]):
                c = model_counts(meta, crit)
                lines.append(f"| {model} | {meta['steps']} | " + " | ".join(str(c[k]) for k in KINDS)
                             + f" | {c['hard negatives']} |")
                result["models"][model].setdefault("against_steps", {})[str(meta["steps"])] = c
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1))
        plot_share_curves({m: v["share_curve"] for m, v in result["models"].items()},
                          Path(args.out).with_name(Path(args.out).stem + "_share.png"))


if __name__ == "__main__":
    main()
