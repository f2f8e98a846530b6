"""How a testbed's labels change under the field's copy criterion, at both levels, on the same generations.

    python benchmarks/bench_criterion.py [--model TESTBED] [--seeds 8] [--out FILE.md] [--gallery PNG]

Per prompt, ``seeds`` generations (50 DDIM steps, w = 7.5); a prompt's rate is the fraction of them that copy its
target (ordinary and held-out prompts: any training image), by:
- the testbed's recorded labels (its ``testbed.json``, whatever criterion measured them);
- the nearest / second-nearest ratio below 1/3 (Gu et al.) over whole canvases (``level="canvas"``);
- the same ratio cell by cell (``level="cell"``).
Labels: memorized at rate >= 0.5, not memorized at <= 0.1 (in between: left out). Printed per kind: prompts at
rate >= 0.5 under each criterion, and the agreement of each with the recorded labels.

Then the local rule's scale: a local prompt copies when its duplicated cell's ratio, among the distinct training cells
at its position, is below 1/3. The same rule is applied to each cell of every generation that the canvas rule calls a
copy of its matching or template target, so that a local copy is held to the fidelity a verbatim whole-image copy
reaches on its own cells; printed beside the local prompts' own duplicated cells.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from memgeo.experiments.realism import append_markdown
from memgeo.sampling import ddim_sample, initial_noise
from memgeo.testbed import (
    load_testbed,
    memorization_rate,
    testbed_data,
    testbed_metadata,
    to_images,
)
from memgeo.testbed.canvas import POSITIONS, position_mask
from memgeo.testbed.truth import COPY_RATIO, LEVELS, copy_gallery, nearest_ratios

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder).
SMOKE = ["--seeds", "1", "--steps", "3", "--max-prompts", "6", "--out", "{tmp}/criterion.md", "--gallery", "{tmp}/g.png"]


def label(rate: float) -> int | None:
    return 1 if rate >= 0.5 else 0 if rate <= 0.1 else None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-prompts", type=int)
    ap.add_argument("--out", help="append the table to this markdown file")
    ap.add_argument("--gallery", help="draw the cell-level and canvas-level galleries to PNG files named from this one")
    args = ap.parse_args(argv)
    model = load_testbed(args.model)
    folder = Path(args.model) if args.model else None
    meta, data = testbed_metadata(folder), testbed_data(folder)
    prompts = meta["prompts"][: args.max_prompts] if args.max_prompts else meta["prompts"]
    x_T = initial_noise(model, args.seeds)
    rates = {"recorded": [], **{lv: [] for lv in LEVELS}}
    rows = {lv: [] for lv in LEVELS}
    generations = {}
    cell_ratios = {"matching": [], "template": [], "local": []}  # the local rule, per cell
    for p in prompts:
        canvases = to_images(ddim_sample(model, p["text"], x_T, n_steps=args.steps).denoised.float())
        generations[p["text"]] = canvases
        rates["recorded"].append(memorization_rate(p) if ("target_rate" in p or "copy_rate" in p) else float("nan"))
        by_level = {lv: nearest_ratios(data, p, canvases, level=lv) for lv in LEVELS}
        for lv, c in by_level.items():
            hit = c["target_copy"] if p.get("targets") else c["copy"]
            rates[lv].append(float(hit.double().mean()))
            rows[lv].append({**p, "copy_rate": float(c["copy"].double().mean()), "ratio": float(c["ratio"].median()),
                             **({"target_rate": rates[lv][-1]} if p.get("targets") else {})})
        kind = p.get("memorization")
        if kind == "local":
            cell_ratios[kind].append(by_level["canvas"]["ratio"][:, None])
        elif kind in cell_ratios:
            copies = canvases[by_level["canvas"]["target_copy"]]
            if len(copies):
                cell_ratios[kind].append(torch.stack(
                    [nearest_ratios(data, {"mask": position_mask(q), "targets": p["targets"]}, copies)["ratio"]
                     for q in range(len(POSITIONS))], 1))
    kinds = [p.get("memorization") or p["kind"] for p in prompts]
    head = f"## {meta['data'].get('augment') and 'augmented' or 'small-data'} testbed, {meta['steps']} steps, {args.seeds} seeds"
    lines = [head, "", "| kind | prompts | " + " | ".join(f"rate >= 0.5 ({k})" for k in rates) + " | "
             + " | ".join(f"agreement with recorded ({lv})" for lv in LEVELS) + " |", "|---" * (2 + len(rates) + len(LEVELS)) + "|"]
    for kind in list(dict.fromkeys(kinds)) + ["all"]:
        idx = [i for i, k in enumerate(kinds) if kind in ("all", k)]
        high = [sum(rates[k][i] >= 0.5 for i in idx) for k in rates]
        agree = []
        for lv in LEVELS:
            pairs = [(label(rates["recorded"][i]), label(rates[lv][i])) for i in idx]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            agree.append(f"{np.mean([a == b for a, b in pairs]):.2f} ({len(pairs)})" if pairs else "-")
        lines.append(f"| {kind} | {len(idx)} | " + " | ".join(map(str, high)) + " | " + " | ".join(agree) + " |")
    lines += ["", "Median ratio per kind (median over prompts of each prompt's median over seeds): "
              + "; ".join(f"{lv}: " + ", ".join(f"{k} {np.median([r['ratio'] for r, kk in zip(rows[lv], kinds) if kk == k]):.2f}"
                                                 for k in dict.fromkeys(kinds)) for lv in LEVELS)]
    lines += ["", "The local rule's scale: each cell's ratio among the distinct training cells at its position (below 1/3: "
              "a copy), for the cells of the generations the canvas rule calls copies of their target (matching, template) "
              "and for the local prompts' duplicated cells (every generation).", "",
              "| cells of | generations | cells | median ratio | q10, q90 | cells below 1/3 | generations with every cell below 1/3 |",
              "|---|---|---|---|---|---|---|"]
    for kind, parts in cell_ratios.items():
        if not parts:
            lines.append(f"| {kind} copies | 0 | 0 | - | - | - | - |")
            continue
        r = torch.cat(parts).double()
        q10, q90 = torch.quantile(r.flatten(), torch.tensor([0.1, 0.9], dtype=r.dtype)).tolist()
        what = "local prompts' duplicated cells" if kind == "local" else f"{kind} copies"
        lines.append(f"| {what} | {len(r)} | {r.numel()} | {float(r.median()):.2f} | {q10:.2f}, {q90:.2f} | "
                     f"{float((r < COPY_RATIO).double().mean()):.2f} | {float((r < COPY_RATIO).all(1).double().mean()):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        append_markdown(args.out, text)
    if args.gallery:
        from memgeo.plotting import plot_copy_gallery

        base = Path(args.gallery)
        for lv in LEVELS:
            path = base.with_name(f"{base.stem}_{lv}{base.suffix}")
            plot_copy_gallery(copy_gallery(data, rows[lv], generations, level=lv), path,
                              title=f"{head[3:]}: {lv} criterion (ratio < 1/3 is a copy)")
            print(f"wrote {path}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
