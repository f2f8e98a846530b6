"""Does a testbed behave like Stable Diffusion? The realism checks R1-R4, measured by generation.

    python benchmarks/bench_realism.py [--model TESTBED] [--seeds 8] [--uncond-seeds 128] [--out FILE.md]

- R1: per-step AUROC of the guidance-gap norm |eps_c - eps_u| (50 DDIM steps, w = 7.5), memorized prompts
  (target rate >= 0.5) against ordinary ones (copy rate <= 0.1), each prompt's mean over its seeds. On SD
  v1.4 (Wen et al.'s released notebook) the memorized gap stays above the ordinary one at every step.
- R2: unconditional generations (no prompt, no guidance) that copy a training image, and a duplicated one.
- R3: copy rates of ordinary and held-out prompts.
- R4: graded memorization: duplicated prompts with rates strictly between 0.1 and 0.9, and memorized prompts
  (rate >= 0.5) of each kind, by duplication count.

Ground truth is the testbed's own (:func:`memgeo.testbed.generation_copies`, threshold from the training cells'
nearest-neighbour distances); the traces of R1 come from the same generations.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from memgeo.detect import auroc
from memgeo.sampling import GuidanceNormTracker, ddim_sample, initial_noise
from memgeo.testbed import generation_copies, load_testbed, nearest_neighbour_threshold, testbed_data, testbed_metadata
from memgeo.testbed.canvas import KINDS, to_images

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = ["--seeds", "1", "--steps", "4", "--uncond-seeds", "2", "--max-prompts", "6", "--out", "{tmp}/realism.md"]


def measure(model, data, prompts, *, seeds: int, n_steps: int, guidance_scale: float, uncond_seeds: int,
            progress: bool = False) -> dict:
    """Rates per prompt, gap traces ``[n_steps]`` per prompt (mean over seeds), and the unconditional copy rates."""
    from tqdm.auto import tqdm

    thr = nearest_neighbour_threshold(data.bank)
    x_T = initial_noise(model, seeds)
    rows = []
    for p in tqdm(prompts, desc="prompts", disable=not progress):
        res = ddim_sample(model, p["text"], x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                          trackers={"gap": GuidanceNormTracker()})
        c = generation_copies(data, p, to_images(res.denoised.float()), thr)
        rate = c["target"] if "target" in c and p["kind"] == "memorized" else c["canvas"]
        rows.append({"text": p["text"], "kind": p["kind"], "memorization": p.get("memorization"),
                     "duplication": p.get("duplication"), "rate": float(rate.double().mean()),
                     "copy_rate": float(c["canvas"].double().mean()), "gap": res.trace["gap"].double().mean(1).tolist(),
                     **({"target_distance": float(c["target_distance"].median()) / thr} if "target_distance" in c else {})})
    un = ddim_sample(model, None, initial_noise(model, list(range(10_000, 10_000 + uncond_seeds))), n_steps=n_steps,
                     guidance_scale=1.0).denoised
    hits = generation_copies(data, {}, to_images(un.float()), thr)["canvases"]  # [N, canvases]
    duplicated = torch.zeros(hits.shape[1], dtype=torch.bool)
    duplicated[[i for p in data.prompts if p["kind"] == "memorized" for i in p["targets"]]] = True
    return {"threshold": thr, "prompts": rows,
            "unconditional": {"seeds": uncond_seeds, "copy_rate": float(hits.any(1).double().mean()),
                              "duplicated_copy_rate": float((hits & duplicated).any(1).double().mean())}}


def realism(result: dict) -> dict:
    """R1-R4 from :func:`measure`."""
    rows = result["prompts"]
    mem = [r for r in rows if r["kind"] == "memorized" and r["rate"] >= 0.5]
    ordinary = [r for r in rows if r["kind"] == "ordinary" and r["copy_rate"] <= 0.1]
    r1 = None
    if mem and ordinary:
        y = np.array([1] * len(mem) + [0] * len(ordinary))
        gaps = np.array([r["gap"] for r in mem + ordinary])  # [prompts, steps]
        r1 = [auroc(y, gaps[:, s]) for s in range(gaps.shape[1])]
    dup = [r for r in rows if r["kind"] == "memorized"]
    graded = [r for r in dup if 0.1 < r["rate"] < 0.9]
    by_kind = {k: sum(r["rate"] >= 0.5 for r in dup if r["memorization"] == k) for k in KINDS}
    ladder, distance = defaultdict(list), defaultdict(list)
    for r in dup:
        ladder[(r["memorization"], r["duplication"])].append(r["rate"])
        if "target_distance" in r:
            distance[(r["memorization"], r["duplication"])].append(r["target_distance"])
    return {
        "R1": r1, "R2": result["unconditional"],
        "R3": {k: max((r["copy_rate"] for r in rows if r["kind"] == k), default=None) for k in ("ordinary", "heldout")},
        "R4": {"graded": len(graded), "duplicated": len(dup), "memorized_by_kind": by_kind,
               "rate_by_rung": {f"{k} x{d}": float(np.mean(v)) for (k, d), v in sorted(ladder.items())},
               # median over a rung's prompts of each prompt's median distance to copying its target, in thresholds
               "distance_by_rung": {f"{k} x{d}": float(np.median(v)) for (k, d), v in sorted(distance.items())}},
        "n_memorized": len(mem), "n_ordinary": len(ordinary),
    }


def format_realism(r: dict, title: str) -> str:
    lines = [f"## {title}", "", "| check | target | measured | met |", "|---|---|---|---|"]
    r1 = r["R1"]
    if r1 is None:
        lines.append("| R1 per-step gap AUROC | > 0.5 every step, >= 0.7 last ten, median >= 0.8 | "
                     f"no memorized ({r['n_memorized']}) or ordinary ({r['n_ordinary']}) prompts | no |")
    else:
        last = r1[-10:]
        ok = min(r1) > 0.5 and min(last) >= 0.7 and float(np.median(r1)) >= 0.8
        lines.append(f"| R1 per-step gap AUROC ({r['n_memorized']} memorized vs {r['n_ordinary']} ordinary) | > 0.5 every "
                     f"step, >= 0.7 last ten, median >= 0.8 | min {min(r1):.2f}, last ten min {min(last):.2f}, median "
                     f"{float(np.median(r1)):.2f} | {'yes' if ok else 'no'} |")
    u = r["R2"]
    lines.append(f"| R2 unconditional copies ({u['seeds']} seeds) | <= 1% | {100 * u['copy_rate']:.1f}% (of a duplicated "
                 f"image: {100 * u['duplicated_copy_rate']:.1f}%) | {'yes' if u['copy_rate'] <= 0.01 else 'no'} |")
    r3 = r["R3"]
    ok3 = all(v == 0 for v in r3.values() if v is not None)
    lines.append(f"| R3 ordinary / held-out copy rate (max) | 0 | {r3['ordinary']} / {r3['heldout']} | {'yes' if ok3 else 'no'} |")
    r4 = r["R4"]
    ok4 = r4["graded"] >= 0.2 * r4["duplicated"] and min(r4["memorized_by_kind"].values()) >= 8
    lines.append(f"| R4 graded; memorized per kind | >= 20% graded; >= 8 per kind | {r4['graded']} of {r4['duplicated']} "
                 f"graded; {r4['memorized_by_kind']} | {'yes' if ok4 else 'no'} |")
    lines += ["", "Mean rate by kind and duplication: " + ", ".join(f"{k} {v:.2f}" for k, v in r4["rate_by_rung"].items())]
    if r4.get("distance_by_rung"):
        lines += ["", "Distance to copying the target, in copy thresholds (median over seeds, then prompts; a copy is "
                  "below 1): " + ", ".join(f"{k} {v:.1f}" for k, v in r4["distance_by_rung"].items())]
    if r1 is not None:
        lines += ["", "R1 per step (first to last): " + " ".join(f"{a:.2f}" for a in r1)]
    return "\n".join(lines) + "\n"


def append_markdown(path, text: str) -> None:
    """Append ``text`` (and a blank line) to the markdown file ``path``, creating its folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(text + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--uncond-seeds", type=int, default=128)
    ap.add_argument("--max-prompts", type=int, help="at most this many prompts (a quick look)")
    ap.add_argument("--title", help="heading of the table (default: the testbed's regime and steps)")
    ap.add_argument("--out", help="append the table to this markdown file")
    ap.add_argument("--json", help="write R1-R4 and the per-prompt numbers to this file")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = load_testbed(args.model)
    folder = Path(args.model) if args.model else None
    meta = testbed_metadata(folder)
    data = testbed_data(folder)
    prompts = data.prompts[: args.max_prompts] if args.max_prompts else data.prompts
    result = measure(model, data, prompts, seeds=args.seeds, n_steps=args.steps, guidance_scale=args.guidance,
                     uncond_seeds=args.uncond_seeds, progress=True)
    r = realism(result)
    regime = "sd" if meta["data"].get("augment") else "small-data"
    title = args.title or (f"{regime} regime, {meta['steps']} steps ({len(data.images)} distinct images, "
                           f"{meta['n_training_items']} items), {args.seeds} seeds")
    text = format_realism(r, title)
    print(text)
    if args.out:
        append_markdown(args.out, text)
    if args.json:
        Path(args.json).write_text(json.dumps({"title": title, **r, "raw": result}, indent=1))


if __name__ == "__main__":
    main()
