"""Which steering action keeps a memorized prompt's content and loses its copy: each window of the action tried.

    python benchmarks/bench_steer_action.py [--model TESTBED] [--seeds 4] --out FOLDER

Steering (Brokman et al., NeurReps 2025) flags a sample mid-generation and changes its guidance. This study takes the
detection away (every memorized prompt flagged from the start: the action alone, as with a perfect detector) and
reads each action on the testbed's memorized prompts (verbatim labels) that the mitigation trade-off does not score
(`memgeo bench --mitigation --max-prompts 24` scores 12 of them, spread over the list: those are left out, so that
the trade-off reads the chosen action on prompts it was not chosen on), generated from its scoring seeds: guidance
``low_guidance`` from ``act_from`` to before ``act_until`` (fractions of the steps), the prompt's own guidance
outside that window. Per action: the memorization rate (copies of the prompt's own image), the caption fidelity kept
(over the unmitigated generations' from the same noises) and the copies of any other training image. Every action
tried is printed, so that the choice is visible; the rule: the lowest memorization rate among the actions that keep
at least 0.8 of the fidelity (ties: the higher fidelity). The action is chosen on one model and read unchanged on
the others (the ordinary prompts' change and the detector's flags are the trade-off's, `memgeo bench --mitigation`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from memgeo._util import spread
from memgeo.experiments.tradeoff import caption_fidelity, fidelity_classifier
from memgeo.mitigate import SteeringPolicy
from memgeo.mitigate.presets import SteerSettings
from memgeo.sampling import ddim_sample, initial_noise
from memgeo.testbed import load_testbed, target_copies, testbed_data, testbed_metadata, testbed_name, to_images
from memgeo.testbed.labels import memorization_rate
from memgeo.testbed.protocol import testbed_scoring_seeds
from memgeo.testbed.truth import nearest_ratios

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder).
SMOKE = ["--seeds", "1", "--steps", "4", "--max-prompts", "1", "--windows", "0:0.5", "--low-guidance", "0",
         "--out", "{tmp}/steer"]


def positive(text: str) -> int:
    """A command-line count of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def window(text: str) -> tuple[float, float]:
    """A command-line ``act_from:act_until`` pair of fractions with ``0 <= act_from < act_until <= 1``."""
    try:
        a, b = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected act_from:act_until (two fractions), got {text!r}") from None
    if not 0.0 <= a < b <= 1.0:
        raise argparse.ArgumentTypeError(f"expected 0 <= act_from < act_until <= 1, got {text!r}")
    return a, b

#: ``(act_from, act_until)`` windows tried by default: early, middle and late, short and long, and every start to the
#: end (1.0), the official action's (from the start) included.
WINDOWS = ((0.0, 0.2), (0.0, 0.4), (0.1, 0.3), (0.1, 0.5), (0.2, 0.5), (0.3, 0.7), (0.5, 0.8),
           (0.0, 1.0), (0.3, 1.0), (0.5, 1.0), (0.7, 1.0), (0.8, 1.0), (0.9, 1.0))
#: The memorized prompts the trade-off scores (``--max-prompts 24``: half memorized), left out here.
TRADEOFF_MEMORIZED = 12
#: The kept fidelity an action must reach to be chosen (the trade-off target's bound).
KEPT = 0.8


def choose(rows: list[dict]) -> dict | None:
    """The rule: the lowest memorization rate among the actions keeping at least :data:`KEPT` of the fidelity."""
    ok = [r for r in rows if r["fidelity_kept"] >= KEPT]
    return min(ok, key=lambda r: (r["memorization_rate"], -r["fidelity_kept"])) if ok else None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    ap.add_argument("--seeds", type=positive, default=4)
    ap.add_argument("--steps", type=positive, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--max-prompts", type=positive, help="at most this many of the prompts read (spread)")
    ap.add_argument("--low-guidance", type=float, nargs="+", default=[0.0, -4.0])
    ap.add_argument("--windows", nargs="+", type=window, help="act_from:act_until fractions (default: WINDOWS)")
    ap.add_argument("--out", required=True, help="folder for steer_action.md and .json")
    args = ap.parse_args(argv)
    windows = tuple(args.windows) if args.windows else WINDOWS
    meta = testbed_metadata(args.model)
    seeds = testbed_scoring_seeds(meta, args.seeds)  # never the label seeds, checked before any work
    memorized = [p for p in meta["prompts"] if p.get("targets") and memorization_rate(p, "verbatim") >= 0.5]
    scored = {p["text"] for p in spread(memorized, TRADEOFF_MEMORIZED)}  # as the trade-off picks them
    mem = [p for p in memorized if p["text"] not in scored] or memorized  # (a testbed with few: all of them)
    mem = spread(mem, args.max_prompts) if args.max_prompts else mem
    if not mem:
        raise SystemExit(f"--model: {testbed_name(args.model)} has no memorized prompt by its verbatim labels")
    level = meta["ground_truth"].get("criterion", {}).get("level", "canvas")  # the rule its copies were counted by
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, data = load_testbed(args.model), testbed_data(args.model)
    clf, truth = fidelity_classifier(data), meta["ground_truth"]
    x_T = initial_noise(model, seeds)

    def read(policy) -> tuple[float, float, float]:
        """Memorization rate, fidelity and the share of generations that copy another training image."""
        own, other, fid = [], [], []
        for p in mem:
            res = ddim_sample(model, p["text"], x_T, n_steps=args.steps, guidance_scale=args.guidance, policy=policy)
            canvases = to_images(res.denoised.float())
            own += target_copies(data, truth, p, canvases, "verbatim").tolist()
            c = nearest_ratios(data, p, canvases, level=level)
            other += (c["copy"] & ~c["nearest_is_target"]).tolist()
            fid += caption_fidelity(clf, canvases, p["text"]).tolist()
        return float(np.mean(own)), float(np.mean(fid)), float(np.mean(other))

    base_rate, base_fid, base_other = read(None)
    rows = []
    for w in args.low_guidance:
        for a, b in windows:
            s = SteerSettings(low_guidance=w, act_from=a, act_until=b)
            policy = SteeringPolicy.from_preset(None, "memgeo", args.steps, settings=s, flags=torch.tensor(True))
            rate, fid, other = read(policy)
            rows.append({"low_guidance": w, "act_from": a, "act_until": b, "memorization_rate": rate,
                         "other_copies": other, "fidelity": fid,
                         "fidelity_kept": fid / base_fid if base_fid > 0 else float("nan")})
    chosen = choose(rows)
    lines = [f"# The steering action alone on {testbed_name(args.model)}",
             "", f"{len(mem)} of its {len(memorized)} memorized prompts (verbatim labels; those the trade-off does "
             f"not score), every one flagged from the start; seeds {seeds[0]}-"
             f"{seeds[-1]}; {args.steps} DDIM steps, guidance {args.guidance}. Unmitigated: memorization rate "
             f"{base_rate:.3f}, copies of another image {base_other:.3f}, fidelity {base_fid:.3f}.", "",
             "| low guidance | act from | act until | memorization rate | copies of another image | fidelity | "
             "fidelity kept | chosen |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "yes" if r is chosen else ""
        lines.append(f"| {r['low_guidance']:g} | {r['act_from']:g} | {r['act_until']:g} | {r['memorization_rate']:.3f} "
                     f"| {r['other_copies']:.3f} | {r['fidelity']:.3f} | {r['fidelity_kept']:.2f} | {mark} |")
    lines += ["", f"Rule: the lowest memorization rate among the actions keeping at least {KEPT} of the fidelity "
              "(ties: the higher fidelity): "
              + ("none keeps it" if chosen is None else
                 f"low guidance {chosen['low_guidance']:g} from {chosen['act_from']:g} to {chosen['act_until']:g}.")]
    text = "\n".join(lines)
    (out / "steer_action.md").write_text(text + "\n")
    (out / "steer_action.json").write_text(json.dumps({"settings": vars(args), "seeds": seeds, "windows": windows,
                                                       "unmitigated": {"memorization_rate": base_rate,
                                                                       "other_copies": base_other,
                                                                       "fidelity": base_fid},
                                                       "rows": rows, "chosen": chosen}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
