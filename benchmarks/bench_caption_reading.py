"""Where mitigated generations of a shared caption land: the copy, another image under the same caption, or elsewhere.

    python benchmarks/bench_caption_reading.py --model TESTBED [--seeds 8] --out benchmarks/results/FOLDER

A matching prompt whose caption also labels other training canvases (its "companions": images that fit the caption
and are not the copy) can leave the memorized image for one of them. For every such prompt of the testbed, each
method of the trade-off generates from scoring seeds (from 1000, apart from the label seeds); each generation is read
against the distinct training canvases: its nearest one, and the ratio of its nearest to its second-nearest distance.
Per method, the share of generations

- ``own``: a replica of the prompt's own (duplicated) image (ratio < 1/2, nearest the prompt's image);
- ``companion``: a replica of one of its companions (ratio < 1/2, nearest a companion);
- ``near companion``: nearest a companion, but no replica (ratio >= 1/2);
- ``near own``: nearest the prompt's own image, but no replica;
- ``elsewhere``: nearest any other training canvas;

and the caption fidelity (the trade-off's measure: the share of cells whose digit is the one the caption names)
in each group. If fidelity counts generations near a companion as right, it is not what keeps a mitigation from its
target on these prompts. Written to OUT/caption_reading.md and OUT/caption_reading.json.

Only a testbed trained with companions has such prompts (the fifth SD-regime ladder, the earlier embedded model: its
weights in commit 6ebc167, runs/README.md); the benchmark protocol's models have none, and are refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from memgeo.experiments.tradeoff import caption_fidelity, fidelity_classifier
from memgeo.mitigate import calibrate_steering, generate
from memgeo.sampling import initial_noise
from memgeo.testbed import load_testbed, testbed_data, testbed_metadata, testbed_name, to_images
from memgeo.testbed.criteria import REPLICATION_RATIO
from memgeo.testbed.protocol import testbed_scoring_seeds
from memgeo.testbed.truth import distinct_rows, two_nearest

#: None: it needs a testbed with companions, which tests/test_benchmarks.py trains for it.
SMOKE = None

#: ``method[:strength]`` rows (memgeo presets, as the trade-off's): unmitigated, the baselines and each method at a
#: middle strength of its sweep.
DEFAULT_METHODS = ("none", "guidance:3", "guidance:1", "embedding:0.5", "noise:10", "steer:2", "basin:-2")
GROUPS = ("own", "companion", "near companion", "near own", "elsewhere")


def shared_caption_prompts(data) -> list[dict]:
    """The matching prompts whose caption labels other training canvases too, each with ``companions``: those
    canvases' indices."""
    by_text: dict = {}
    for i, text in data.items:
        by_text.setdefault(text, set()).add(int(i))
    out = []
    for p in data.prompts:
        if p.get("memorization") == "matching":
            others = sorted(by_text.get(p["text"], set()) - set(p["targets"]))
            if others:
                out.append({**p, "companion_canvases": others})
    return out


def groups_of(bank, inverse, prompt: dict, canvases: torch.Tensor) -> list[str]:
    """Each generation's group (:data:`GROUPS`) among the distinct training canvases ``bank`` (``inverse``: each
    training canvas's row of it, :func:`~memgeo.testbed.truth.distinct_rows`)."""
    d1, d2, nn = two_nearest(canvases.float().clamp(-1, 1).reshape(len(canvases), -1), bank)
    ratio = torch.where(d2 > 0, d1 / d2, torch.zeros_like(d1))
    own = torch.isin(nn, inverse[prompt["targets"]])
    comp = torch.isin(nn, inverse[prompt["companion_canvases"]]) & ~own
    close = ratio < REPLICATION_RATIO
    return ["own" if o and c else "companion" if m and c else "near companion" if m else "near own" if o
            else "elsewhere" for o, m, c in zip(own.tolist(), comp.tolist(), close.tolist())]


def measure(model, data, prompts, methods, *, seeds, n_steps, guidance_scale, calib, clf) -> list[dict]:
    """One row per (method, prompt, seed): its group and caption fidelity."""
    x_T = initial_noise(model, seeds)
    reference = None
    if any(m.split(":")[0] == "steer" for m in methods):
        reference = calibrate_steering(model, calib, x_T, n_steps=n_steps, guidance_scale=guidance_scale)
    bank, inverse = distinct_rows(data.images)  # once for every generation
    rows = []
    for m in methods:
        name, _, strength = m.partition(":")
        for p in prompts:
            g = generate(model, p["text"], x_T, method=name, strength=float(strength) if strength else None,
                         n_steps=n_steps, guidance_scale=guidance_scale, reference=reference)
            canvases = to_images(g.samples.float())
            fid = caption_fidelity(clf, canvases, p["text"])
            for s, grp, f in zip(seeds, groups_of(bank, inverse, p, canvases), fid.tolist()):
                rows.append({"method": m, "prompt": p["text"], "seed": s, "companions": len(p["companion_canvases"]),
                             "group": grp, "fidelity": f})
    return rows


def table(rows: list[dict], methods) -> str:
    lines = ["| method | " + " | ".join(f"{g} (share, fidelity)" for g in GROUPS) + " | fidelity, all |",
             "|---|" + "---|" * (len(GROUPS) + 1)]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        cells = []
        for g in GROUPS:
            sel = [r["fidelity"] for r in mine if r["group"] == g]
            cells.append(f"{len(sel) / len(mine):.2f}, {np.mean(sel):.2f}" if sel else "0.00, -")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean([r['fidelity'] for r in mine]):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a testbed folder whose matching prompts share their caption")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--max-prompts", type=int, default=None)
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="method[:strength] rows")
    ap.add_argument("--classifier-cells", type=int, default=40000, help="training cells of the fidelity classifier")
    ap.add_argument("--out", required=True, help="folder for caption_reading.md and .json")
    args = ap.parse_args(argv)
    meta = testbed_metadata(args.model)
    seeds = testbed_scoring_seeds(meta, args.seeds)  # never the label seeds, checked before any work
    data = testbed_data(args.model)
    prompts = shared_caption_prompts(data)[: args.max_prompts]
    if not prompts:  # before anything is written or evaluated
        raise SystemExit(f"--model: the testbed in {args.model!r} has no matching prompt whose caption labels other "
                         "training canvases (a testbed trained with companions, such as the fifth SD-regime ladder)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_testbed(args.model)
    calib = [p["text"] for p in meta["prompts"] if p["kind"] == "ordinary"][::8]  # unlabelled calibration prompts
    rows = measure(model, data, prompts, args.methods, seeds=seeds, n_steps=args.steps, guidance_scale=args.guidance,
                   calib=calib, clf=fidelity_classifier(data, max_cells=args.classifier_cells))
    head = (f"{len(prompts)} matching prompts whose caption labels {min(p['companions'] for p in rows)}-"
            f"{max(p['companions'] for p in rows)} other training canvases; {len(seeds)} scoring seeds from "
            f"{seeds[0]}; {args.steps} DDIM steps, guidance {args.guidance}; model: {testbed_name(args.model)}.")
    text = "# Where mitigated generations of a shared caption land\n\n" + head + "\n\n" + table(rows, args.methods)
    (out / "caption_reading.md").write_text(text + "\n")
    (out / "caption_reading.json").write_text(json.dumps({"settings": vars(args), "seeds": seeds, "rows": rows},
                                                         indent=1))
    print(text)


if __name__ == "__main__":
    main()
