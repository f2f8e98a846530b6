"""A benchmark protocol's models against its targets: counts per kind, hard negatives, stability across snapshots.

    python benchmarks/bench_protocol.py --models DIR [DIR ...] [--snapshots DIR ...] [--out FILE.md]

Each DIR is a protocol run's model folder whose ``testbed.json`` holds ground truth from the protocol's label seeds
(``memgeo testbed truth --protocol sd-bench``). Per model, at the protocol's criterion and label thresholds: the
verbatim-memorized prompts of each kind, the graded ones, the hard negatives (duplicated, never a replica of their
image), the ordinary and held-out prompts not memorized, and whether each target is met; per rung, the share of the
draws against the memorization rate (the curve that says what a missed target would take). ``--snapshots``: for the
model of the same position, its earlier snapshots (each labelled the same way); the share of duplicated prompts
whose label (memorized / graded / not memorized) is the same at the final step and at the snapshot. Nothing here
selects a model or a snapshot: the protocol fixed them.
"""

from __future__ import annotations

import argparse
import json
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
    """Per duplicated prompt: kind, share of the draws per image, memorization rate (sorted by kind and share)."""
    n_items = meta["n_training_items"]
    rows = [{"kind": p["memorization"], "share": p["duplication"] / n_items / (len(p["targets"]) if
             p["memorization"] == "template" else 1), "rate": crit.prompt_rate(p)}
            for p in meta["prompts"] if p["kind"] == "memorized"]
    return sorted(rows, key=lambda r: (r["kind"], r["share"]))


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
    if args.snapshots:
        lines += ["", f"Stability (target: {proto['labels']['stability_target']:.0%} of duplicated prompts keep their "
                      "label):", "", "| model | snapshot | labels kept |", "|---|---|---|"]
        for spec in args.snapshots:
            index, _, folder = spec.partition(":")
            model = args.models[int(index)]
            kept = stability(metas[int(index)], testbed_metadata(folder), crit)
            lines.append(f"| {model} | {folder} | {kept:.2f} |")
            result["models"][model].setdefault("stability", {})[folder] = kept
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
