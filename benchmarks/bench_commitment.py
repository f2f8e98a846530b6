"""When a testbed's generation is decided: guidance for the first k steps only, then none, and where the gap goes.

    python benchmarks/bench_commitment.py [--model TESTBED] [--seeds 4] [--switch 0 5 10 15 20 30 40 50] [--out FILE.md]

For the testbed's memorized prompts (target rate >= 0.5 in its ``testbed.json``, local prompts left out: their copy is
one cell) and as many ordinary ones (rate <= 0.1), each seed is generated (50 DDIM steps) with guidance w = 7.5 for
its first k steps and w = 0 after (the unconditional branch alone), for each k of ``--switch`` (k = 50: guided
throughout). Printed per k: the median over prompts of the median canvas ratio (nearest / second-nearest distinct
training canvas; a verbatim copy is below 1/3) and the fraction of generations that copy the prompt's target. Beside
them, per step of the guided generation, the median gap norm ``|eps_c - eps_u|`` of each group and the median over
memorized prompts of ``|x0_u - x*|``, the unconditional branch's denoised estimate against the nearest target canvas
``x*`` (in the image's [-1, 1] units), which says from which step the unconditional branch alone points at the copy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from memgeo.experiments.realism import append_markdown
from memgeo.parameterization import eps_to_x0
from memgeo.sampling import GuidanceNormTracker, ddim_sample, initial_noise
from memgeo.testbed import TESTBED_DIR, load_testbed, memorization_rate, testbed_data, testbed_metadata, testbed_name, to_images
from memgeo.testbed.protocol import testbed_scoring_seeds
from memgeo.testbed.truth import nearest_ratios

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder).
SMOKE = ["--seeds", "1", "--steps", "3", "--switch", "0", "3", "--max-prompts", "1", "--out", "{tmp}/commitment.md"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="testbed folder with ground truth (memgeo testbed truth; default: the embedded one)")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--switch", type=int, nargs="+", default=[0, 5, 10, 15, 20, 30, 40, 50])
    ap.add_argument("--max-prompts", type=int, default=12, help="at most this many prompts per group")
    ap.add_argument("--out", help="append the tables to this markdown file")
    args = ap.parse_args(argv)
    if any(not 0 <= k <= args.steps for k in args.switch):
        raise SystemExit(f"--switch: steps between 0 and --steps ({args.steps}), got {args.switch}")
    folder = Path(args.model) if args.model else TESTBED_DIR
    meta = testbed_metadata(folder)
    seeds = testbed_scoring_seeds(meta, args.seeds)  # never the label seeds, checked before any work
    model, data = load_testbed(folder), testbed_data(folder)
    rated = [(p, memorization_rate(p)) for p in meta["prompts"]]
    groups = {"memorized": [p for p, r in rated if p["kind"] == "memorized" and r >= 0.5
                            and p.get("memorization") != "local"][: args.max_prompts],
              "ordinary": [p for p, r in rated if p["kind"] == "ordinary" and r <= 0.1][: args.max_prompts]}
    x_T = initial_noise(model, seeds)
    switch = sorted(set(args.switch))
    outcome = {g: {k: [] for k in switch} for g in groups}  # per prompt: (median ratio, target copy rate)
    gap = {g: [] for g in groups}
    x0_apart = []
    for g, prompts in groups.items():
        for p in prompts:
            target = data.images[p["targets"]].reshape(len(p["targets"]), -1).double()

            def apart(model, state, target=target):  # |x0_u - x*| per sample
                x0_u = to_images(eps_to_x0(state.eps_u, state.x, state.alpha, state.sigma).float())
                return torch.cdist(x0_u.reshape(len(x0_u), -1).double(), target).min(1).values

            for k in switch:
                # guided throughout: the gap (and the unconditional estimate) along the prompt's own generation
                trackers = {"gap": GuidanceNormTracker(), "apart": apart} if k == args.steps else None
                res = ddim_sample(model, p["text"], x_T, n_steps=args.steps, trackers=trackers,
                                  policy=lambda state, _trace, k=k: {"guidance_scale": 0.0} if state.index >= k else None)
                c = nearest_ratios(data, p, to_images(res.denoised.float()))
                outcome[g][k].append((float(c["ratio"].median()), float(c["target_copy"].double().mean())))
                if trackers:
                    gap[g].append(res.trace["gap"].median(1).values.tolist())
                    if g == "memorized":
                        x0_apart.append(res.trace["apart"].median(1).values.tolist())
    head = (f"## {testbed_name(args.model)}, {meta['steps']} steps: {len(groups['memorized'])} memorized "
            f"(matching, template), {len(groups['ordinary'])} ordinary prompts, seeds {seeds[0]}-{seeds[-1]}")
    lines = [head, "", "| guided for the first k steps | " + " | ".join(f"k = {k}" for k in switch) + " |",
             "|---" * (1 + len(switch)) + "|"]
    for g in groups:
        lines.append(f"| {g}: median ratio | " + " | ".join(f"{np.median([o[0] for o in outcome[g][k]]):.2f}"
                                                           for k in switch) + " |")
        lines.append(f"| {g}: target copies | " + " | ".join(f"{np.mean([o[1] for o in outcome[g][k]]):.2f}"
                                                            for k in switch) + " |")
    if args.steps in switch:
        lines += [""] + [f"Gap norm per step (median over {g} prompts): "
                         + " ".join(f"{v:.2f}" for v in np.median(np.array(gap[g]), 0)) for g in groups]
        lines += ["", "|x0_u - x*| per step (median over memorized prompts): "
                  + " ".join(f"{v:.2f}" for v in np.median(np.array(x0_apart), 0))]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        append_markdown(args.out, text)


if __name__ == "__main__":
    main()
