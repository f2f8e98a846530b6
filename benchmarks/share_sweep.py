"""The share-and-views curve of a resumable run: how near each rung of the duplication ladder is to copying, per
snapshot, and the realism checks R1-R4 at each, from bench_realism's JSON files.

    python benchmarks/share_sweep.py RUN1.json RUN2.json ... [--out FILE.md] [--figure FILE.png] [--against OTHER.json ...]

Each JSON is ``bench_realism.py --json`` on one snapshot. Printed per rung (kind, share of the training draws per
image): its views and median ratio (nearest / second-nearest distinct training image, median over seeds then
prompts; a verbatim copy is below 1/3) and memorization rate at every snapshot, then the first snapshot at which it is
memorized at each level, with its views there. The figure draws the median ratio against views, one line per rung.
A last table orders the guidance gap per step before and after copying: the
per-step AUROC of the gap norm, every duplicated matching and template prompt (whether it copies yet or not) against
every ordinary prompt, at every snapshot (R1 asks the same of the memorized ones alone). With ``--against``, a second
run of the same ladder is compared with it at the snapshots both measured (:func:`against`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from memgeo.testbed.labels import rung_label

#: The smallest setting, run by the test suite: none (it needs bench_realism's output files).
SMOKE = None


def load(paths) -> list[dict]:
    runs = []
    for p in paths:
        r = json.loads(Path(p).read_text())
        runs.append({"steps": r["steps"], "ladder": r["R4"]["ladder"], "R": r})
    return sorted(runs, key=lambda r: r["steps"])


def table(runs: list[dict]) -> str:
    head = "| kind | share per image | " + " | ".join(f"{r['steps']} steps: views, ratio, rate" for r in runs) + " |"
    lines = [head, "|---" * (2 + len(runs)) + "|"]
    for key, share in _rungs(runs):
        cells = []
        for r in runs:
            row = _rung(r["ladder"], key)
            cells.append("-" if row is None else f"{row.get('views', float('nan')):.0f}, {row['median_ratio']:.2f}, "
                                                 f"{row['rate']:.2f}")
        lines.append(f"| {rung_label(*key)} | {100 * share:.3f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def levels(R: dict) -> dict:
    """A bench_realism result by copy level: its own labels' level, and the replication level where it has both."""
    return {R.get("labels", "verbatim"): R, **({"replication": R["replication"]} if "replication" in R else {})}


def crossings(runs: list[dict]) -> str:
    """Per rung: the first snapshot at which it is memorized (its prompts' mean copy rate at least
    :data:`memgeo.experiments.realism.MEMORIZED_RATE`) at each level, with its views there: the share and views at which
    copying starts. "-" where no snapshot reaches it (the last snapshot's steps and views then bound it from below);
    "<=" where the snapshot before it was not measured at that level (older JSONs hold the verbatim level alone) or
    it is the first snapshot: it is memorized by then, at the latest."""
    from memgeo.experiments.realism import MEMORIZED_RATE

    names = ("verbatim", "replication")
    by_level = [levels(r["R"]) for r in runs]
    lines = ["| kind | share per image | " + " | ".join(f"{n}: first steps, views" for n in names) + " |", "|---|---|---|---|"]
    for key, share in _rungs(runs):
        cells = []
        for name in names:
            first, unmeasured = "-", True  # the first snapshot bounds a crossing from above too
            for r, at in zip(runs, by_level):
                row = _rung(at[name]["R4"]["ladder"], key) if name in at else None
                if row is not None and row["rate"] >= MEMORIZED_RATE:
                    first = f"{'<= ' * unmeasured}{r['steps']}, {row.get('views', float('nan')):.0f}"
                    break
                unmeasured = row is None
            if not any(name in at for at in by_level):
                first = "not measured"
            cells.append(first)
        lines.append(f"| {rung_label(*key)} | {100 * share:.3f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _key(row: dict) -> tuple:
    """A rung's identity: kind, copies, and the companions sharing its caption (0 for none)."""
    return row["kind"], row["duplication"], row.get("companions", 0)


def _rungs(runs: list[dict]) -> list[tuple]:
    """The last snapshot's rungs as (key, share), in its order."""
    return [(_key(row), row["share"]) for row in runs[-1]["ladder"]]


def _rung(ladder: list[dict], key: tuple) -> dict | None:
    return next((x for x in ladder if _key(x) == key), None)


def checks(runs: list[dict]) -> str:
    """One row per snapshot and labels: R1-R4 as measured there (memgeo.experiments.realism), and whether each is met;
    a snapshot read by both levels (bench_realism --criterion both) gives a verbatim and a replication row."""
    lines = ["| steps | views per single | seeds | labels | R1 min, median (memorized vs ordinary) | R2 unconditional "
             "copies | R3 max copy rate (ordinary / held-out) | R4 memorized per kind; graded | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        seeds = r["R"].get("title", "").rsplit(", ", 1)[-1].replace(" seeds", "")
        steps = f"{r['steps']} | {single_views(r['ladder']):.1f}"
        lines += [_check_row(steps, seeds, name, R) for name, R in levels(r["R"]).items()]
    return "\n".join(lines)


def single_views(ladder: list[dict]) -> float:
    """Views per single (undivided) training item so far: items are drawn uniformly, so a rung's views per copy."""
    row = next((x for x in ladder if x.get("views") is not None), None)
    return float("nan") if row is None else row["views"] / row["duplication"]


def _check_row(steps: str, seeds: str, labels: str, R: dict) -> str:
    import numpy as np

    from memgeo.experiments.realism import realism_verdicts

    r1 = R["R1"]
    r1_text = "-" if r1 is None else f"{min(r1):.2f}, {float(np.median(r1)):.2f} ({R['n_memorized']} vs {R['n_ordinary']})"
    k = R["R4"]["memorized_by_kind"]
    met = ", ".join(name for name, ok in realism_verdicts(R).items() if ok) or "none"
    return (f"| {steps} | {seeds} | {labels} | {r1_text} | {100 * R['R2']['copy_rate']:.1f}% | "
            f"{R['R3']['ordinary']} / {R['R3']['heldout']} | matching {k['matching']}, template {k['template']}, "
            f"local {k['local']}; {R['R4']['graded']} | {met} |")


def mixture(runs: list[dict]) -> str:
    """Per rung whose caption has companions (other images under the same caption), from the largest share of its
    caption to the smallest: that share (the duplicate's copies over its caption's items, the weight of the duplicate
    in the caption's own distribution) and the prompt's copy rate at each snapshot, verbatim / replication. Empty
    where no rung has companions."""
    keys = sorted({(_key(x), x["caption_share"]) for r in runs for x in r["ladder"] if x.get("companions")},
                  key=lambda kv: (kv[0][0], -kv[1]))
    if not keys:
        return ""
    by_level = [levels(r["R"]) for r in runs]
    lines = ["| rung | duplicate's share of its caption | " + " | ".join(f"{r['steps']} steps" for r in runs) + " |",
             "|---" * (2 + len(runs)) + "|"]
    for key, caption_share in keys:
        cells = []
        for at in by_level:
            rates = [_rung(at[name]["R4"]["ladder"], key) if name in at else None for name in ("verbatim", "replication")]
            cells.append(" / ".join("-" if x is None else f"{x['rate']:.2f}" for x in rates))
        lines.append(f"| {rung_label(*key)} | {caption_share:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The steps (1-based, of 50) at which :func:`gap_order` prints the two groups' median gap norms.
GAP_STEPS = (1, 10, 20, 30, 40, 50)


def gap_order(runs: list[dict]) -> str:
    """Per snapshot: the gap norm's per-step AUROC, duplicated matching and template prompts (copying or not) against
    ordinary ones (each prompt's mean over seeds), its minimum and median, the steps below 0.5, and both groups' median
    gap at :data:`GAP_STEPS`."""
    import numpy as np

    from memgeo.experiments.realism import gap_auroc_by_step

    lines = ["| steps | duplicated vs ordinary | AUROC min, median | steps below 0.5 | median gap, duplicated / ordinary, at "
             "steps " + ", ".join(map(str, GAP_STEPS)) + " |", "|---|---|---|---|---|"]
    for r in runs:
        rows = r["R"]["raw"]["prompts"]
        dup = [x["gap"] for x in rows if x["kind"] == "memorized" and x["memorization"] in ("matching", "template")]
        ordinary = [x["gap"] for x in rows if x["kind"] == "ordinary"]
        if not dup or not ordinary:
            continue
        per_step = np.array(gap_auroc_by_step(dup, ordinary))
        below = np.flatnonzero(per_step < 0.5) + 1
        where = "none" if not len(below) else f"{below.min()}-{below.max()} ({len(below)})"
        medians = np.median(dup, axis=0), np.median(ordinary, axis=0)  # per step
        med = [f"{medians[0][s - 1]:.2f} / {medians[1][s - 1]:.2f}" for s in GAP_STEPS if s <= len(per_step)]
        lines.append(f"| {r['steps']} | {len(dup)} vs {len(ordinary)} | {per_step.min():.2f}, {np.median(per_step):.2f} | "
                     f"{where} | {'; '.join(med)} |")
    return "\n".join(lines)


def against(runs: list[dict], others: list[dict]) -> str:
    """Two runs of one ladder (say float32 and bfloat16 training) at the snapshots both measured: per snapshot, the
    mean and median absolute difference of every rung's median ratio (other minus this), both runs' memorized prompts
    per kind at each level, and R2 and R3 (copies by unconditional, ordinary and held-out draws)."""
    import numpy as np

    lines = ["| steps | ratio difference, mean / median absolute | level | memorized per kind (this / other) | R2 (this / "
             "other) | R3 ordinary, held-out (this / other) |", "|---|---|---|---|---|---|"]
    by_steps = {r["steps"]: r for r in others}
    for r in runs:
        o = by_steps.get(r["steps"])
        if o is None:
            continue
        pairs = ((x, _rung(o["ladder"], _key(x))) for x in r["ladder"])
        d = [y["median_ratio"] - x["median_ratio"] for x, y in pairs if y is not None]
        diff = f"{np.mean(d):+.3f} / {np.median(np.abs(d)):.3f}"
        for name, R in levels(r["R"]).items():
            Q = levels(o["R"]).get(name)
            if Q is None:
                continue
            k, q = R["R4"]["memorized_by_kind"], Q["R4"]["memorized_by_kind"]
            per_kind = ", ".join(f"{kind} {k[kind]} / {q[kind]}" for kind in k)
            lines.append(f"| {r['steps']} | {diff} | {name} | {per_kind} | {100 * R['R2']['copy_rate']:.1f}% / "
                         f"{100 * Q['R2']['copy_rate']:.1f}% | {R['R3']['ordinary']}, {R['R3']['heldout']} / "
                         f"{Q['R3']['ordinary']}, {Q['R3']['heldout']} |")
    return "\n".join(lines)


def figure(runs: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from memgeo.plotting import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, kind in zip(axes, ("matching", "template", "local")):
        for key, share in sorted({(_key(x), x["share"]) for r in runs for x in r["ladder"]}):
            if key[0] != kind:
                continue
            pts = [(x.get("views"), x["median_ratio"]) for r in runs for x in r["ladder"] if _key(x) == key]
            ax.plot(*zip(*pts), marker="o", label=f"{100 * share:.3f}% per image" + (f", +{key[2]}" if key[2] else ""))
        ax.axhline(1 / 3, color="k", ls="--", lw=0.8)
        ax.set_title(kind)
        ax.set_xlabel("views per duplicated image")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("median ratio (copy below 1/3)")
    save_figure(fig, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out")
    ap.add_argument("--figure")
    ap.add_argument("--against", nargs="+", metavar="JSON",
                    help="another run of the same ladder (say another precision): compare it at the common snapshots")
    args = ap.parse_args(argv)
    runs = load(args.runs)
    text = "\n\n".join(t for t in (checks(runs), table(runs), crossings(runs), mixture(runs), gap_order(runs)) if t)
    if args.against:
        text += "\n\n" + against(runs, load(args.against))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.figure:
        figure(runs, args.figure)


if __name__ == "__main__":
    main()
