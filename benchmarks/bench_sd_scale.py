"""Every signal's cost at Stable Diffusion scale: seconds per 10 prompts and peak memory, against the physical floor.

    python benchmarks/bench_sd_scale.py [--sample-size 64] [--out benchmarks/results/sd_scale/sd_scale.md]

The model has SD v1.4's architecture with random weights (``memgeo.models.architectures``; no
download). On CUDA it runs at the real size (4x64x64 latents) in fp16 weights; on CPU in float32
at a reduced latent size. Each signal runs at its published settings (``preset="official"``, 50
DDIM steps, one generation per prompt) and at memgeo's defaults. Every signal evaluates the 10
prompts in one batch (the generation signals: one generation carries the 10 rows, each row drawing
its directions from its own generator). Every time is the median of warmed-up repeats (one repeat
where a run takes over 20 s).

The physical floor is the time of the UNet forward passes the signal needs, batched: 10 prompts x
(evaluations + 2 x JVPs) per prompt, at the per-row time of a batched forward pass measured here.
The last column is the anisotropy paper's time on SD v1.4 (seconds per 10 prompts, their GPU).
"""

import argparse
import json
import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch

from memgeo.detect import SIGNALS
from memgeo.models.architectures import sd_v1_random_model
from memgeo.sampling import initial_noise

# Asthana & Belagiannis 2026, SD v1.4, seconds per 10 prompts. Their Wen time (0.4 s, against 1.1 s for the
# 4 evaluations of anisotropy) is the first-step guidance norm: memgeo's default variant.
PAPER = {("guidance_norm", "memgeo"): 0.4, ("anisotropy", "official"): 1.1, ("sharpness", "official"): 5.4}


class PeakMemory:
    """Peak device memory (CUDA) or peak resident-set growth sampled every 2 ms (CPU), in bytes."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        import psutil

        self.proc, self.base, self.peak, self.stop = psutil.Process(), psutil.Process().memory_info().rss, 0, False

        def watch():
            while not self.stop:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                time.sleep(0.002)

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop = True
            self.thread.join()
            self.bytes = max(0, self.peak - self.base)


def timed(fn, device, *, repeats=3, slow=20.0):
    """Median seconds of warmed-up runs (one warm-up, then ``repeats``, or one if a run exceeds ``slow`` s)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for k in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
        if k == 1 and times[-1] > slow:
            break
    return float(np.median(times[1:])), out


#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = None  # building SD v1.4's UNet at its real size takes minutes on CPU


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--sample-size", type=int, default=64 if cuda else 8, help="latent side (64: SD's 512 px)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--signals", nargs="+", default=list(SIGNALS))
    parser.add_argument("--presets", nargs="+", default=["official", "memgeo"])
    parser.add_argument("--out", default="benchmarks/results/sd_scale/sd_scale.md")
    parser.add_argument("--render", metavar="JSON", help="only write the table from a saved run's measurements")
    args = parser.parse_args(argv)
    if args.render:
        render(json.loads(Path(args.render).read_text()), args.out)
        return
    torch.set_num_threads(args.threads)
    device = "cuda" if cuda else "cpu"
    weights = torch.float16 if cuda else torch.float32
    model = sd_v1_random_model(sample_size=args.sample_size, device=device, weights_dtype=weights)
    prompts = [f"a photograph of an astronaut riding horse number {i}" for i in range(10)]
    x1 = initial_noise(model, [0])

    # the floor: per-row time of a batched UNet pass (10 prompts, both branches: 20 rows)
    with torch.no_grad():
        x10 = initial_noise(model, range(10))
        t_batch, _ = timed(lambda: model.eps_pair(x10, 981, prompts), device, repeats=5)
    t_row = t_batch / 20

    rows = []
    for preset in args.presets:
        for name in args.signals:
            kw = {"preset": preset, "n_steps": args.steps}
            if name == "flipd":
                kw["t"] = 41  # the probe-time search runs once per model; it is not part of a prompt's cost
                if preset == "official":  # d = 16384 at SD scale is above 3500: the official trace is Hutchinson
                    kw["method"] = "hutchinson"
            x = torch.cat([x1] * 10)
            if SIGNALS[name].generates:  # one generator per row, as the scan passes them
                kw["generator"] = [torch.Generator().manual_seed(i) for i in range(10)]
            fn = lambda name=name, kw=kw, x=x: SIGNALS[name](model, prompts, x, **kw)  # noqa: E731
            scale, measured = 1, 10
            with PeakMemory(device) as mem:
                seconds, res = timed(fn, device)
            per10 = seconds * scale
            floor = 10 * (res.n_evals + 2 * res.n_jvps) * t_row
            rows.append((name, preset, res.n_evals, res.n_jvps, measured, per10, floor, mem.bytes))
            print(f"{name:<14} {preset:<9} {per10:9.2f} s / 10 prompts (floor {floor:.2f} s), "
                  f"peak {mem.bytes / 2**20:.0f} MiB", flush=True)

    where = (torch.cuda.get_device_name() + ", fp16 weights" if cuda else
             f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads), float32")
    run = {"device": where, "sample_size": args.sample_size, "steps": args.steps, "row_ms": t_row * 1e3,
           "rows": [dict(zip(("signal", "preset", "evals", "jvps", "timed", "per10", "floor", "bytes"), r)) for r in rows]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".json").write_text(json.dumps(run, indent=1))
    render(run, args.out)


def render(run: dict, out: str) -> None:
    """The markdown table of a run's measurements."""
    rows = run["rows"]
    lines = [
        "# Signals at Stable Diffusion v1.4's architecture (random weights)",
        "",
        f"Device: {run['device']}. Latents 4x{run['sample_size']}x{run['sample_size']} (SD: 4x64x64); {run['steps']} "
        f"DDIM steps; one generation per prompt. Batched UNet pass: {run['row_ms']:.1f} ms per row (20 rows). "
        "Floor: the UNet passes the signal needs, 10 prompts batched (a JVP counted as 2 rows).",
        "",
        "| signal | preset | UNet evals / prompt | JVPs / prompt | prompts timed | s / 10 prompts | floor s / 10 prompts | "
        "x floor | peak memory (MiB) | x first-step guidance norm | paper: s / 10 prompts (SD v1.4, their GPU) | paper: x guidance norm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = next((r["per10"] for r in rows if r["signal"] == "guidance_norm" and r["preset"] == "memgeo"), None)
    paper_base = PAPER[("guidance_norm", "memgeo")]
    for r in rows:
        paper = PAPER.get((r["signal"], r["preset"]))
        rel = f"{r['per10'] / base:.1f}" if base else ""
        lines.append(f"| {r['signal']} | {r['preset']} | {r['evals']} | {r['jvps']} | {r['timed']} | {r['per10']:.2f} | "
                     f"{r['floor']:.2f} | {r['per10'] / r['floor']:.2f} | {r['bytes'] / 2**20:.0f} | {rel} | "
                     f"{'' if paper is None else paper} | {'' if paper is None else f'{paper / paper_base:.2f}'} |")
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
