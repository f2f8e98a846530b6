"""Where post-generation signals probe: LID (FLIPD) and the p-Laplacian against t, per class, at four points.

    python benchmarks/bench_probe.py [--model TESTBED] [--prompts 8] [--seeds 2] --out benchmarks/results/probe_points_sd_bench/RUN

For memorized and not memorized prompts (the testbed's ground truth by ``--criterion``; the not-memorized ones are
ordinary prompts, whose training image exists), each generated from scoring seeds (from 1000, apart from the label
seeds), both quantities are read at the lower half of the DDIM timesteps around four points:

- ``generated``: the guided (7.5) sample as it comes out, what the official presets probe;
- ``projected``: the same sample clamped to the model's data range (``probe="projected"``);
- ``guidance 1``: a sample generated from the same noise without guidance amplification;
- ``training image``: the prompt's own training image (a local prompt's first target).

Per point, class and t: the median LID and p-Laplacian, the share of LIDs above the ambient dimension d (outside the
estimator's range), and the AUROC per prompt of each signal's score (-LID; -Delta_1 log p_t) for memorized against
not memorized. Written to OUT/probe.json, OUT/probe.md and OUT/probe.png. The AUROCs use labels, so a default read
off them on one model is checked on another before it counts; the share of LIDs above d needs none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from memgeo.detect import auroc, p_laplace_flux
from memgeo.detect.common import probe_point
from memgeo.detect.flipd import local_intrinsic_dimension
from memgeo.experiments import spread
from memgeo.sampling import ddim_sample
from memgeo.testbed import load_testbed, testbed_data, testbed_labels, testbed_metadata, testbed_name, to_latents
from memgeo.testbed.protocol import testbed_scoring_seeds

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = ["--prompts", "1", "--seeds", "1", "--steps", "4", "--times", "2", "--directions", "2", "--probes", "2",
         "--out", "{tmp}/probe"]

POINTS = ("generated", "projected", "guidance 1", "training image")


def points_of(model, data, prompt: dict, x_T, *, n_steps: int, guidance_scale: float) -> dict:
    """The four probe points of one prompt's generations ``[S, *event]`` each."""
    gen = ddim_sample(model, prompt["text"], x_T, n_steps=n_steps, guidance_scale=guidance_scale).denoised
    one = ddim_sample(model, prompt["text"], x_T, n_steps=n_steps, guidance_scale=1.0).denoised
    image = to_latents(data.images[prompt["targets"][:1]]).to(gen.dtype).expand_as(gen).contiguous()
    return {"generated": gen, "projected": probe_point(model, gen, "projected"), "guidance 1": one,
            "training image": image}


def measure(model, data, prompts, labels, *, seeds, n_steps, guidance_scale, times, n_probes, n_directions):
    """``rows``: one per (prompt, point, t) with the per-seed LIDs and p-Laplacians."""
    from memgeo.sampling import initial_noise

    x_T = initial_noise(model, seeds)
    rows = []
    for p, y in zip(prompts, labels):
        pts = points_of(model, data, p, x_T, n_steps=n_steps, guidance_scale=guidance_scale)
        for name, x0 in pts.items():
            for t in times:
                lid = local_intrinsic_dimension(model, p["text"], x0, t, "hutchinson_fd", n_probes,
                                                torch.Generator().manual_seed(0)).value
                lap = p_laplace_flux(model, p["text"], x_T, x0=x0, t_probe=t, n_directions=n_directions,
                                     generator=torch.Generator().manual_seed(0)).value
                rows.append({"text": p["text"], "label": int(y), "kind": p.get("memorization") or p["kind"],
                             "point": name, "t": int(t), "lid": lid.tolist(), "p_laplace": lap.tolist()})
    return rows


def summarize(rows, d: int) -> list[dict]:
    """Per point and t: medians per class, the share of LIDs above d, the AUROC per prompt of -LID and -Delta_1."""
    out = []
    for point in POINTS:
        for t in sorted({r["t"] for r in rows}):
            rs = [r for r in rows if r["point"] == point and r["t"] == t]
            if not rs:
                continue
            y = np.array([r["label"] for r in rs])
            lid = np.array([np.mean(r["lid"]) for r in rs])
            lap = np.array([np.mean(r["p_laplace"]) for r in rs])
            every = np.concatenate([r["lid"] for r in rs])
            both = len(set(y)) == 2
            out.append({"point": point, "t": t,
                        "lid_memorized": float(np.median(lid[y == 1])) if (y == 1).any() else None,
                        "lid_not": float(np.median(lid[y == 0])) if (y == 0).any() else None,
                        "p_laplace_memorized": float(np.median(lap[y == 1])) if (y == 1).any() else None,
                        "p_laplace_not": float(np.median(lap[y == 0])) if (y == 0).any() else None,
                        "above_d": float(np.mean(every > d)),
                        "auroc_flipd": float(auroc(y, -lid)) if both else None,
                        "auroc_p_laplace": float(auroc(y, -lap)) if both else None})
    return out


def format_table(summary, d: int, head: str) -> str:
    def f(v):
        return "-" if v is None else f"{v:.3g}"

    lines = [head, "", f"| point | t | LID: memorized | LID: not | LID > d={d} | FLIPD AUROC | Delta_1: memorized | "
             "Delta_1: not | p-Laplace AUROC |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['point']} | {s['t']} | {f(s['lid_memorized'])} | {f(s['lid_not'])} | "
                     f"{100 * s['above_d']:.0f}% | {f(s['auroc_flipd'])} | {f(s['p_laplace_memorized'])} | "
                     f"{f(s['p_laplace_not'])} | {f(s['auroc_p_laplace'])} |")
    return "\n".join(lines)


def plot(summary, d: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(POINTS), figsize=(3.2 * len(POINTS), 5.6), sharex=True)
    for j, point in enumerate(POINTS):
        ss = [s for s in summary if s["point"] == point]
        ts = [s["t"] for s in ss]
        for i, (key, name) in enumerate((("lid", "LID"), ("p_laplace", "Delta_1 log p_t"))):
            ax = axes[i, j]
            ax.plot(ts, [s[f"{key}_memorized"] for s in ss], "o-", color="C3", label="memorized")
            ax.plot(ts, [s[f"{key}_not"] for s in ss], "o-", color="C0", label="not memorized")
            if key == "lid":
                ax.axhline(d, color="grey", ls="--", lw=0.8)
                ax.set_title(point, fontsize=9)
            ax.set_xscale("log")
            ax.set_ylabel(name if j == 0 else "")
            if i == 1:
                ax.set_xlabel("t")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    ap.add_argument("--criterion", default="verbatim", choices=("verbatim", "replication"))
    ap.add_argument("--prompts", type=int, default=8, help="memorized and not memorized prompts each")
    ap.add_argument("--seeds", type=int, default=2, help="scoring seeds per prompt (from 1000)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--times", type=int, default=8, help="how many of the lower half's DDIM timesteps (spread)")
    ap.add_argument("--probes", type=int, default=8, help="FLIPD's Hutchinson probes")
    ap.add_argument("--directions", type=int, default=16, help="p-Laplace directions")
    ap.add_argument("--out", required=True, help="folder for probe.md, probe.json and probe.png "
                                                 "(benchmarks/results/probe_points_sd_bench/RUN for a protocol model)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_testbed(args.model)
    meta = testbed_metadata(args.model)
    data = testbed_data(args.model)
    texts, labels, _ = testbed_labels(meta, criterion=args.criterion)
    by_text = {p["text"]: p for p in meta["prompts"]}
    mem = spread([by_text[t] for t, y in zip(texts, labels) if y == 1 and by_text[t].get("targets")], args.prompts)
    neg = spread([by_text[t] for t, y in zip(texts, labels) if y == 0 and by_text[t]["kind"] == "ordinary"],
                 args.prompts)
    seeds = testbed_scoring_seeds(meta, args.seeds)
    ts = sorted(int(t) for t in model.timesteps(args.steps) if int(t) <= model.schedule.num_train_timesteps // 2)
    times = sorted(set(spread(ts, args.times)))
    rows = measure(model, data, mem + neg, [1] * len(mem) + [0] * len(neg), seeds=seeds, n_steps=args.steps,
                   guidance_scale=args.guidance, times=times, n_probes=args.probes, n_directions=args.directions)
    d = int(np.prod(model.event_shape))
    summary = summarize(rows, d)
    head = (f"Probe points on {testbed_name(args.model)} ({args.criterion} labels): {len(mem)} memorized "
            f"and {len(neg)} ordinary not-memorized prompts, scoring seeds {seeds[0]}-{seeds[-1]}, {args.steps} DDIM "
            f"steps at guidance {args.guidance}; FLIPD by central-difference Hutchinson ({args.probes} probes), "
            f"LID at alpha_t x0, the p-Laplacian (p = 1) by boundary flux ({args.directions} directions) around x0 "
            f"re-noised at t (memgeo's preset).")
    (out / "probe.json").write_text(json.dumps({"settings": vars(args), "seeds": seeds, "d": d, "summary": summary,
                                                "rows": rows}))
    table = format_table(summary, d, head)
    (out / "probe.md").write_text(table + "\n")
    plot(summary, d, out / "probe.png")
    print(table)


if __name__ == "__main__":
    main()
