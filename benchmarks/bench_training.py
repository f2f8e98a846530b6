"""Testbed training speed: samples per second of one training step, before and after the training set-up.

    python benchmarks/bench_training.py [--threads 2] [--repeats 8] [--out FILE.md]

Both settings train the testbed's architecture (:data:`memgeo.testbed.train.ARCHITECTURE`) on the same batch of 64
(forward through text encoder and UNet, MSE loss, backward, AdamW step), warmed up, timed alternately, median:
- before: the networks as built (contiguous tensors, diffusers' scaled-dot-product attention, the loop AdamW),
  captions padded to 32 token positions;
- after: :func:`memgeo.testbed.train.prepare_training` (channels-last, classic attention, fused AdamW) with the
  SD regime's 16 positions;
and each single change alone, so the ratio is split by cause; last, ``after`` under bfloat16 autocast (the weights,
gradients and AdamW stay float32: mixed precision), which pays only on a CPU with bfloat16 arithmetic (AMX matrix
units, or AVX512-BF16 dot products); the table's heading names the CPU's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

#: The smallest setting, run by the test suite.
SMOKE = ["--threads", "1", "--repeats", "1"]

from memgeo.experiments.realism import append_markdown
from memgeo.testbed.canvas import DIGITS, THICKNESS
from memgeo.testbed.train import ARCHITECTURE, REGIMES, _components, prepare_training


def step_function(tokenizer_len: int, *, prepared: bool, max_length: int, batch: int = 64, bf16: bool = False):
    """One training step of the testbed's networks (seeded inputs), as a closure."""
    unet, text_encoder = _components(tokenizer_len, 0, {**ARCHITECTURE, "max_length": max_length, "sample_size": 8})
    if prepared:
        opt = prepare_training(unet, text_encoder, lr=1e-3)
    else:
        opt = torch.optim.AdamW(list(unet.parameters()) + list(text_encoder.parameters()), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, tokenizer_len, (batch, max_length), generator=g)
    x_t, noise = torch.randn(2, batch, 4, 8, 8, generator=g, dtype=torch.float32)
    t = torch.randint(0, 1000, (batch,), generator=g)
    if prepared:
        x_t = x_t.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = unet(x_t, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv=None) -> None:
    from memgeo.models.tiny import build_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--out", help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        n = len(build_tokenizer(tmp, words=DIGITS + THICKNESS))
    short = REGIMES["sd"]["architecture"]["max_length"]
    settings = {"before (as built, 32 positions)": dict(prepared=False, max_length=32),
                f"{short} positions only": dict(prepared=False, max_length=short),
                "prepare_training only": dict(prepared=True, max_length=32),
                f"after (prepare_training, {short} positions)": dict(prepared=True, max_length=short),
                "after, bfloat16 autocast": dict(prepared=True, max_length=short, bf16=True)}
    steps = {name: step_function(n, **kw) for name, kw in settings.items()}
    for step in steps.values():  # warm-up
        for _ in range(3):
            step()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):  # alternate, so that a slow spell of the machine hits every setting
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["before (as built, 32 positions)"])
    cpu = (torch.backends.cpu.get_cpu_capability() + (", AVX512-BF16" if torch.cpu._is_avx512_bf16_supported() else "")
           + (", AMX" if torch.cpu._is_amx_tile_supported() else ", no AMX"))
    lines = [f"Testbed training step, batch 64, {args.threads} thread(s), median of {args.repeats} (torch "
             f"{torch.__version__}, {cpu})", "", "| setting | s per step | samples/s | speed-up |", "|---|---|---|---|"]
    for name, ts in times.items():
        m = statistics.median(ts)
        lines.append(f"| {name} | {m:.3f} | {64 / m:.0f} | {base / m:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        append_markdown(args.out, text + "\n")


if __name__ == "__main__":
    main()
