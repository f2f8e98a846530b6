"""Labels from the ground truth: memorization rates per prompt, labels by generation, kinds, rate against duplication."""

from __future__ import annotations

import numpy as np

from .criteria import criterion as criterion_of

__all__ = ["is_hard_negative", "memorization_rate", "memorization_rates", "testbed_labels", "testbed_kinds", "duplication_curve",
           "format_duplication_curve", "format_truth_summary", "rung_label"]


def rung_label(kind: str, duplication: int = 0, companions: int = 0) -> str:
    """A rung's name in tables and galleries: ``"matching x49 +12"`` (kind, copies, companions sharing its caption;
    each part only where it is not 0)."""
    return kind + (f" x{duplication}" if duplication else "") + (f" +{companions}" if companions else "")


def is_hard_negative(p: dict) -> bool:
    """A duplicated prompt that is plainly not memorized: none of its label generations replicates its own image
    (every one at ratio >= 1/2 or nearest another training image; ``target_replica_rate`` 0). The comparison a user
    needs is memorized against these, not against prompts that were never duplicated."""
    if p.get("kind") != "memorized" or int(p.get("duplication", 0)) < 2:
        return False
    if "target_replica_rate" not in p:
        raise ValueError("the testbed's ground truth has no replication rates: run `memgeo testbed truth` again")
    return float(p["target_replica_rate"]) == 0.0


def memorization_rate(p: dict, criterion: str = "verbatim") -> float:
    """A prompt's memorization rate from the testbed's ground truth, by ``criterion``
    (:data:`memgeo.testbed.criteria.CRITERIA`): where the prompt has targets the fraction of its generations that copy
    (``"verbatim"``: ``target_rate``) or replicate (``"replication"``: ``target_replica_rate``) one of them, else
    the fraction that copy or replicate any training canvas."""
    return criterion_of(criterion).prompt_rate(p)


def memorization_rates(meta: dict, texts, criterion: str = "verbatim") -> list[float]:
    """Per prompt, the fraction of its generations that copy (graded ground truth from ``testbed truth``)."""
    by_text = {p["text"]: p for p in meta["prompts"]}
    return [memorization_rate(by_text[t], criterion) for t in texts]


def testbed_labels(meta: dict, *, min_rate: float | None = None, max_rate: float | None = None,
                   criterion: str = "verbatim") -> tuple[list[str], list[int], dict]:
    """Evaluation prompts and labels of the testbed, by generation.

    A prompt is memorized (1) when at least ``min_rate`` of its generations copy its training
    canvases, not memorized (0) when at most ``max_rate`` do, whatever its construction; prompts in
    between are left out and counted. The counts also say how each class was built. ``criterion``
    (:data:`memgeo.testbed.criteria.CRITERIA`): verbatim copies (the default) or the looser replication level, whose
    labels always name it. ``min_rate`` and ``max_rate`` default to the criterion's (0.5 and 0.1).
    """
    crit = criterion_of(criterion)
    min_rate = crit.min_rate if min_rate is None else min_rate
    max_rate = crit.max_rate if max_rate is None else max_rate
    if not 0 <= max_rate < min_rate <= 1:
        raise ValueError(f"need 0 <= max_rate < min_rate <= 1, got max_rate={max_rate}, min_rate={min_rate}")
    texts, labels = [], []
    counts = {"memorized": {}, "not memorized": {}, "left out (rate in between)": 0}
    for p in meta["prompts"]:
        rate = memorization_rate(p, criterion)
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


def duplication_curve(meta: dict, criterion: str = "verbatim") -> list[dict]:
    """Memorization rate against duplication count, per kind: one row per (kind, count, companions sharing the
    caption) with the number of prompts, their mean rate, and how many have a rate strictly between 0.1 and 0.9."""
    rows = {}
    for p in meta["prompts"]:
        if not p.get("targets"):
            continue
        key = (p.get("memorization") or p["kind"], int(p["duplication"]), int(p.get("companions", 0)))
        rows.setdefault(key, []).append(memorization_rate(p, criterion))
    return [{"kind": k, "duplication": d, **({"companions": m} if m else {}), "prompts": len(r),
             "mean_rate": float(np.mean(r)), "graded": int(sum(0.1 < x < 0.9 for x in r))}
            for (k, d, m), r in sorted(rows.items())]


def format_duplication_curve(rows: list[dict]) -> str:
    shared = any("companions" in r for r in rows)  # a column only where some caption has companions
    head = ("| kind | duplication | " + "companions | " * shared + "prompts | mean memorization rate | "
            "rate in (0.1, 0.9) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    lines += [f"| {r['kind']} | {r['duplication']} | " + f"{r.get('companions', 0)} | " * shared
              + f"{r['prompts']} | {r['mean_rate']:.3f} | {r['graded']} |" for r in rows]
    return "\n".join(lines)


def format_truth_summary(rows: list[dict], criterion: str = "verbatim") -> str:
    """The ground truth per kind of prompt (:func:`~memgeo.testbed.memorization_ground_truth` rows) by ``criterion``
    (:data:`memgeo.testbed.criteria.CRITERIA`): each kind's mean memorization and copy rates, median ratio and how many
    prompts are graded."""
    crit = criterion_of(criterion)
    lines = [f"{crit.name} criterion: nearest / second-nearest distinct training {rows[0]['criterion']} distance "
             f"{crit.rule}; a prompt's ratio is the median over its generations",
             f"{'kind':<10} {'prompts':>7} {'memorization rate':>17} {'any image':>9} {'median ratio':>12} "
             f"{'rate in (0.1, 0.9)':>18}"]
    any_rate = crit.any_rate
    for kind in dict.fromkeys(r.get("memorization") or r["kind"] for r in rows):
        rs = [r for r in rows if (r.get("memorization") or r["kind"]) == kind]
        rates = [memorization_rate(r, criterion) for r in rs]
        lines.append(f"{kind:<10} {len(rs):7d} {np.mean(rates):17.3f} {np.mean([r[any_rate] for r in rs]):9.3f} "
                     f"{np.median([r['ratio'] for r in rs]):12.3f} {sum(0.1 < x < 0.9 for x in rates):18d}")
    mem = [memorization_rate(r, criterion) for r in rows if r["kind"] == "memorized"]
    lines.append(f"memorized by generation (rate >= {crit.min_rate:g}): {sum(x >= crit.min_rate for x in mem)} of "
                 f"{len(mem)} duplicated prompts; "
                 f"graded (rate in (0.1, 0.9)): {sum(0.1 < x < 0.9 for x in mem)}; hard negatives (never a replica of "
                 f"their image): {sum(is_hard_negative(r) for r in rows)}")
    return "\n".join(lines)
