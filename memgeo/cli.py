"""The ``memgeo`` command line."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from pathlib import Path

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import format_rows, foundation_demo

    print("memgeo: closed-form geometry of Gaussian mixtures beside every estimator")
    print(f"(one noised point per mixture, sigma = 0.5; {args.probes} probes; |z| = |estimate - exact| / stderr)\n")
    print(format_rows(foundation_demo(n_probes=args.probes, seed=args.seed)))
    return 0


_LABELS = {"1": 1, "mem": 1, "memorized": 1, "0": 0, "nmem": 0, "ordinary": 0, "auto": None}


def _no_loading_bars() -> None:
    """Silence the weight-loading progress bars of diffusers and transformers (for --no-progress)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _scan(args) -> int:
    import torch

    from .io import read_prompts
    from .scan import ScanConfig, ScanInterrupted, resolve_flipd_t, run_scan

    if args.labels and len(args.labels) != len(args.prompts):
        raise ValueError(f"--labels needs one label per --prompts file ({len(args.prompts)}), got {len(args.labels)}")
    records = []
    for i, path in enumerate(args.prompts):
        recs = read_prompts(path)[: args.limit] if args.limit else read_prompts(path)
        if args.labels:
            lab = args.labels[i].lower()
            if lab not in _LABELS:
                raise ValueError(f"--labels entries must be one of {sorted(_LABELS)}, got {args.labels[i]!r}")
            if _LABELS[lab] is not None:
                for r in recs:
                    r.label = _LABELS[lab]
        records += recs
    cfg = ScanConfig(signals=tuple(args.signals), seeds=tuple(range(args.seeds)), n_steps=args.steps,
                     guidance_scale=args.guidance, anisotropy_weights=args.weights, n_directions=args.directions,
                     preset=args.preset)
    if args.rank_by is not None and args.rank_by not in cfg.signals:
        raise ValueError(f"--rank-by must be one of the scanned --signals {list(cfg.signals)}, got {args.rank_by!r}")
    ref_records = [r for path in args.reference for r in read_prompts(path)] if args.reference else None
    from .sd import DiffusersScoreModel
    from .sd.testbed import TESTBED_DIR

    if args.no_progress:
        _no_loading_bars()
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    path = args.model if args.model is not None else TESTBED_DIR  # the embedded testbed by default
    model = DiffusersScoreModel.from_pretrained(path, device=args.device, dtype=dtype, allow_download=args.allow_download)
    if ref_records:  # FLIPD's probe time from the reference prompts, the same for both scans
        cfg = resolve_flipd_t(model, cfg, [r.text for r in ref_records])
    try:
        result = run_scan(model, records, args.out, cfg, progress=not args.no_progress, batch_size=args.batch_size)
        reference = None
        if ref_records:
            reference = run_scan(model, ref_records, args.out, cfg, progress=not args.no_progress,
                                 batch_size=args.batch_size, desc="reference")
    except ScanInterrupted as stop:
        print(f"memgeo scan: interrupted; {stop.saved} of the {stop.asked} results this run had to compute are saved "
              f"in {stop.path}; run the same command again to resume", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under accelerate launch the main process reports
    _scan_report(args, result, reference, cfg)
    return 0


def _scan_report(args, result, reference, cfg) -> None:
    """The summary, the ranked and flagged report, the histogram and (with labels) the ROC plot."""
    from .report import calibrate, format_report, plot_score_histogram, report_rows, write_report
    from .scan import plot_roc, prompt_scores, summarize

    table, metrics = summarize(result)
    print(table)
    out = Path(args.out)
    signal = args.rank_by or cfg.signals[0]
    calibration = None
    if reference is not None:
        print(f"\nthresholds from {len(reference.prompts)} reference prompts at FPR {args.fpr:g}:")
        for name in cfg.signals:
            _, ref_scores, _ = prompt_scores(reference, name)
            cal = calibrate(ref_scores, fpr=args.fpr, signal=name)
            _, scores, _ = prompt_scores(result, name)
            print(f"  {name:<14} threshold {cal.threshold:.4g}: {int(cal.flags(scores).sum())} of "
                  f"{len(result.prompts)} prompts flagged")
            if name == signal:
                calibration = cal
    rows = report_rows(result, signal, calibration)
    print("\n" + format_report(rows, signal=signal, top=20, calibration=calibration))
    path = write_report(rows, Path(args.report) if args.report else out.with_name(out.stem + ".report.md"),
                        signal=signal, calibration=calibration)
    _, scores, _ = prompt_scores(result, signal)
    png = plot_score_histogram(scores, out.with_name(out.stem + ".hist.png"), signal=signal, calibration=calibration)
    print(f"\nreport: {path}; histogram: {png}")
    if metrics:
        roc = plot_roc(metrics, out.with_suffix(".roc.png"))
        print(f"ROC plot: {roc}")


def _testbed_train(args) -> int:
    from .sd.testbed import train_testbed

    out = train_testbed(args.out, steps=args.steps, seed=args.seed, checkpoint_every=args.checkpoint_every,
                        batch_size=args.batch_size, progress=not args.no_progress,
                        mitigate_threshold=args.mitigate_threshold)
    print(f"testbed saved in {out} (Stable Diffusion layout); next: memgeo testbed truth --model {out}")
    return 0


def _testbed_truth(args) -> int:
    import json

    from .sd.testbed import TESTBED_DIR, load_testbed, memorization_ground_truth, testbed_metadata

    path = Path(args.model) if args.model else TESTBED_DIR
    out = Path(args.out) if args.out else None
    package = TESTBED_DIR.resolve()
    if out is None:
        if path.resolve() == package:
            raise ValueError("--out is required for the embedded testbed: its testbed.json is part of the installed "
                             "package (give a file path such as truth.json)")
        out = path / "testbed.json"
    if out.resolve() == package or package in out.resolve().parents:
        raise ValueError(f"--out {str(out)!r} lies inside the installed package ({package}); give a path outside it")
    if out.is_dir():
        raise IsADirectoryError(f"--out {str(out)!r} is a directory; give a file path such as truth.json")
    if args.no_progress:
        _no_loading_bars()
    model = load_testbed(path)
    meta = testbed_metadata(path)
    rows = memorization_ground_truth(model, meta["prompts"], seeds=args.seeds, n_steps=args.steps,
                                     guidance_scale=args.guidance, progress=not args.no_progress)
    meta["prompts"] = rows
    meta["ground_truth"] = {"seeds": args.seeds, "n_steps": args.steps, "guidance_scale": args.guidance,
                            "threshold": rows[0]["threshold"]}
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out)  # written whole or not at all
    print(f"wrote {out}")
    from .bench import duplication_curve, format_duplication_curve, memorization_rate

    print(f"copy threshold per 8x8 cell (1% quantile of the training digits' nearest-neighbour distances): "
          f"{rows[0]['threshold']:.3f}")
    print(f"{'kind':<10} {'prompts':>7} {'memorization rate':>17} {'copy rate':>9} {'rate in (0.1, 0.9)':>18}")
    for kind in dict.fromkeys(r.get("memorization") or r["kind"] for r in rows):
        rs = [r for r in rows if (r.get("memorization") or r["kind"]) == kind]
        rates = [memorization_rate(r) for r in rs]
        print(f"{kind:<10} {len(rs):7d} {np.mean(rates):17.3f} {np.mean([r['copy_rate'] for r in rs]):9.3f} "
              f"{sum(0.1 < x < 0.9 for x in rates):18d}")
    mem = [memorization_rate(r) for r in rows if r["kind"] == "memorized"]
    print(f"memorized by generation (rate >= 0.5): {sum(x >= 0.5 for x in mem)} of {len(mem)} duplicated prompts; "
          f"graded (rate in (0.1, 0.9)): {sum(0.1 < x < 0.9 for x in mem)}")
    print(format_duplication_curve(duplication_curve(meta)))
    return 0


def _bench(args) -> int:
    from .bench import mitigation_tradeoff, run_leaderboards

    if args.no_progress:
        _no_loading_bars()
    if args.mitigation:
        trained = {}
        for folder in args.trained or []:
            from .sd.testbed import testbed_metadata

            mit = testbed_metadata(folder).get("mitigation")
            label = f"training (filter {mit['threshold']:g})" if mit else f"training ({Path(folder).name})"
            trained[label] = folder
        mitigation_tradeoff(testbed_path=args.model, out_dir=args.out, seeds=args.seeds, n_steps=args.steps,
                            guidance_scale=args.guidance, max_prompts=args.max_prompts, progress=not args.no_progress,
                            trained=trained)
        return 0
    run_leaderboards(testbed_path=args.model, out_dir=args.out, seeds=args.seeds, n_steps=args.steps,
                     guidance_scale=args.guidance, max_prompts=args.max_prompts, mixture_conditions=args.mixture_conditions,
                     progress=not args.no_progress)
    return 0


def _generate(args) -> int:
    import json

    import torch

    from .detect import initial_noise
    from .mitigate import calibrate_steering, generate
    from .sd.testbed import testbed_metadata, to_images

    model, path = _load_model(args)
    x_T = initial_noise(model, args.seeds)
    reference = None
    if args.mitigate == "steer":
        if (path / "testbed.json").exists():
            calib = [p["text"] for p in testbed_metadata(path)["prompts"] if p["kind"] == "ordinary"][::8]
        elif args.reference_prompts:
            from .io import read_prompts

            calib = [r.text for r in read_prompts(args.reference_prompts)]
        else:
            raise ValueError("--mitigate steer needs --reference-prompts (ordinary prompts to calibrate on) for this model")
        reference = calibrate_steering(model, calib, x_T, n_steps=args.steps, guidance_scale=args.guidance,
                                       progress=not args.no_progress)
    g = generate(model, args.prompt, x_T, method=args.mitigate, strength=args.strength, n_steps=args.steps,
                 guidance_scale=args.guidance, reference=reference, preset=args.preset, progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if (path / "testbed.json").exists():  # the testbed: latents are images
        imgs = to_images(g.samples.float()).clamp(-1, 1)
    else:  # no VAE is loaded: show the first latent channel
        imgs = g.samples.float()[:, 0]
    _save_grid(imgs, out / "samples.png", title=f"{args.prompt!r} ({args.mitigate})")
    info = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in g.info.items()}
    (out / "signals.json").write_text(json.dumps({"prompt": args.prompt, "mitigate": args.mitigate,
                                                  "preset": args.preset, "strength": args.strength,
                                                  "seeds": args.seeds, "n_evals_per_sample": g.n_evals, **info}, indent=1))
    print(f"wrote {out / 'samples.png'} and {out / 'signals.json'} ({g.n_evals} UNet evaluations per sample)")
    return 0


def _explain_target(out: Path, name: str, record: dict) -> Path:
    """``out/name``, refusing to overwrite a file that holds another prompt's or model's result."""
    import json

    path = out / name
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} exists and is not a memgeo result ({err}); choose another --out") from err
        if any(old.get(k) != record[k] for k in ("prompt", "model", "settings")):
            raise ValueError(f"{path} already holds a result for prompt {old.get('prompt')!r} on "
                             f"{(old.get('model') or {}).get('name')!r} with other settings; choose another --out "
                             "(nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    return path


def _load_model(args):
    """``(model, folder)``: ``--model`` (default: the embedded testbed) through ``from_pretrained``."""
    from .sd import DiffusersScoreModel
    from .sd.testbed import TESTBED_DIR

    if args.no_progress:
        _no_loading_bars()
    path = Path(args.model) if args.model else TESTBED_DIR
    return DiffusersScoreModel.from_pretrained(path), path


def _explain(args) -> int:
    import json

    from .explain import plot_token_attribution, token_attribution

    model, _ = _load_model(args)
    settings = {"signal": args.signal, "method": "both", "seeds": args.seeds, "n_steps": args.steps}
    record = {"prompt": args.prompt, "model": model.identity, "settings": settings}
    path = _explain_target(Path(args.out), "explain.json", record)
    att = token_attribution(model, args.prompt, signal=args.signal, seeds=args.seeds, n_steps=args.steps)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**record, **{k: v for k, v in att.to_json().items() if k != "settings"}}, indent=1))
    tmp.replace(path)
    png = plot_token_attribution(att, path.with_suffix(".png"), title=args.prompt)
    top = ", ".join(f"{att.tokens[i]!r} {att.scores[i]:.3g}" for i in att.ranking()[:5])
    print(f"{args.signal} {att.value:.4g}; tokens by gradient attribution: {top}")
    if att.spearman is not None:
        print(f"Spearman correlation of the gradient and leave-one-out rankings: {att.spearman:.3f}")
    print(f"wrote {path} and {png}")
    return 0


def _localize(args) -> int:
    import json

    from .explain import cross_attention_map, localize, pixel_auroc, plot_localization
    from .sd.testbed import testbed_metadata

    model, folder = _load_model(args)
    settings = {"seeds": args.seeds, "n_steps": args.steps, "guidance_scale": args.guidance, "step": args.step}
    record = {"prompt": args.prompt, "model": model.identity, "settings": settings}
    path = _explain_target(Path(args.out), "localize.json", record)
    loc = localize(model, args.prompt, seeds=args.seeds, n_steps=args.steps, guidance_scale=args.guidance, step=args.step)
    attn = cross_attention_map(model, args.prompt, n_steps=args.steps, x_last=loc.x_last)
    mask = None
    if (folder / "testbed.json").exists():
        mask = next((p.get("mask") for p in testbed_metadata(folder)["prompts"] if p["text"] == args.prompt), None)
    result = {**record, "map": loc.map.tolist(), "shape": list(loc.map.shape), "step": loc.step, "t": loc.t,
              "cross_attention": attn.tolist()}
    if mask is not None:
        result["mask"] = mask
        result["pixel_auroc"] = {"map": pixel_auroc(loc.map, mask), "cross_attention": pixel_auroc(attn, mask)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    png = plot_localization(model, loc, path.with_suffix(".png"), cross_attention=attn, mask=mask, title=args.prompt)
    print(f"memorization map at step {loc.step} (t = {loc.t}), image shape {tuple(loc.map.shape)}")
    if mask is not None:
        print(f"pixel AUROC against the prompt's mask: map {result['pixel_auroc']['map']:.3f}, "
              f"cross-attention {result['pixel_auroc']['cross_attention']:.3f}")
    print(f"wrote {path} and {png}")
    return 0


def _save_grid(imgs, path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = imgs.shape[0]
    cols = min(n, 8)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        axes.flat[i].imshow(imgs[i].numpy(), cmap="gray_r" if imgs.shape[-1] == 8 else "viridis")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memgeo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="closed-form values beside every estimator on a few mixtures")
    demo.add_argument("--probes", type=int, default=256, help="probes per stochastic estimate (default 256)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    from .detect import SIGNALS

    scan = sub.add_parser("scan", help="compute memorization signals for prompt files on a checkpoint (resumable)")
    scan.add_argument("--model", help="Stable Diffusion folder (or hub id with --allow-download); default: the embedded testbed")
    scan.add_argument("--prompts", nargs="+", required=True, help="prompt files: .jsonl (caption), .txt, .csv (Caption)")
    scan.add_argument("--labels", nargs="+", help="one label per prompt file: mem|1, nmem|0, or auto (from the file)")
    scan.add_argument("--signals", nargs="+", default=["guidance_norm", "anisotropy", "sharpness"], choices=sorted(SIGNALS),
                      metavar="SIGNAL", help=f"signals to compute (default: guidance_norm anisotropy sharpness; all: {' '.join(SIGNALS)})")
    scan.add_argument("--seeds", type=int, default=4, help="initial-noise seeds per prompt (default 4)")
    scan.add_argument("--out", required=True, help="results file (JSON lines; an existing one is resumed)")
    scan.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    scan.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    scan.add_argument("--preset", choices=["memgeo", "official"], default="memgeo",
                      help="signal settings: memgeo (defaults that hold on any model) or official (each paper's "
                           "released code); see docs/conventions.md")
    scan.add_argument("--weights", choices=["auto", "sd1", "sd2"], default="auto",
                      help="anisotropy weights (default auto: sd1 for epsilon models, sd2 for v-prediction)")
    scan.add_argument("--directions", type=int, help="kappa-delta directions per step, and 4x as many p-Laplace "
                                                     "directions (default: the preset's, 4 and 16 under memgeo)")
    scan.add_argument("--limit", type=int, help="take at most this many prompts from each file")
    scan.add_argument("--reference", nargs="+", metavar="FILE",
                      help="unlabelled ordinary prompts: each signal's threshold is their (1 - fpr) quantile, and "
                           "scanned prompts above it are flagged (scanned and cached like any prompts)")
    scan.add_argument("--fpr", type=float, default=0.01, help="false-positive rate for --reference (default 0.01)")
    scan.add_argument("--rank-by", metavar="SIGNAL", help="signal that ranks the report (default: the first --signals)")
    scan.add_argument("--report", help="report file of every prompt, ranked: .csv, or markdown otherwise "
                                       "(default: beside --out, OUT.report.md)")
    scan.add_argument("--batch-size", type=int, default=8,
                      help="prompts (all their seeds) per model call for guidance_norm, anisotropy and sharpness "
                           "(default 8; results equal those of 1)")
    scan.add_argument("--device", default="cpu")
    scan.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="dtype of the estimator math")
    scan.add_argument("--allow-download", action="store_true", help="allow fetching a hub id (off by default)")
    scan.add_argument("--no-progress", action="store_true")
    scan.set_defaults(func=_scan)

    tb = sub.add_parser("testbed", help="the memorization testbed: train it, or measure which prompts it memorized")
    tb_sub = tb.add_subparsers(dest="testbed_command", required=True)
    train = tb_sub.add_parser("train", help="train the testbed (seeded, resumable from its checkpoint)")
    train.add_argument("--out", required=True, help="output folder (Stable Diffusion layout; resumes a checkpoint there)")
    train.add_argument("--steps", type=int, default=10000)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--mitigate-threshold", type=float, metavar="X",
                       help="training-time mitigation (Wen et al. 2024): leave out of the loss every sample whose "
                            "guidance-gap norm |eps(x_t, caption) - eps(x_t, '')| is at least X")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_testbed_train)
    truth = tb_sub.add_parser("truth", help="ground truth by generation: how often each prompt copies its target")
    truth.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    truth.add_argument("--out", help="where to write the testbed.json with the measured rates (default: the --model "
                                     "folder's testbed.json; required for the embedded testbed, which is never rewritten)")
    truth.add_argument("--seeds", type=int, default=16)
    truth.add_argument("--steps", type=int, default=50)
    truth.add_argument("--guidance", type=float, default=7.5)
    truth.add_argument("--no-progress", action="store_true")
    truth.set_defaults(func=_testbed_truth)

    gen = sub.add_parser("generate", help="generate images for a prompt, with or without a mitigation")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--model", help="model folder (default: the embedded testbed)")
    gen.add_argument("--mitigate", choices=["none", "guidance", "embedding", "noise", "steer"], default="none")
    gen.add_argument("--strength", type=float, help="method strength (see memgeo.mitigate.generate)")
    gen.add_argument("--preset", choices=["memgeo", "official"], default="memgeo",
                     help="settings of the embedding and noise mitigations: memgeo or official (the released code)")
    gen.add_argument("--seeds", type=int, default=8)
    gen.add_argument("--steps", type=int, default=50)
    gen.add_argument("--guidance", type=float, default=7.5)
    gen.add_argument("--reference-prompts", help="ordinary prompts to calibrate steering on (non-testbed models)")
    gen.add_argument("--out", default="generations", help="folder for samples.png and signals.json")
    gen.add_argument("--no-progress", action="store_true")
    gen.set_defaults(func=_generate)

    def prompt_command(name: str, func, help: str, seeds: int):
        cmd = sub.add_parser(name, help=help)
        cmd.add_argument("--prompt", required=True)
        cmd.add_argument("--out", required=True, help=f"folder for {name}.json and {name}.png")
        cmd.add_argument("--model", help="model folder (default: the embedded testbed)")
        cmd.add_argument("--seeds", type=int, default=seeds)
        cmd.add_argument("--no-progress", action="store_true")
        cmd.set_defaults(func=func)
        return cmd

    ex = prompt_command("explain", _explain, "which tokens of a prompt drive its memorization signal "
                                             "(gradient and leave-one-out)", seeds=4)
    ex.add_argument("--signal", choices=("guidance_norm", "anisotropy"), default="guidance_norm")
    ex.add_argument("--steps", type=int, default=50, help="DDIM steps (the signal is taken at the first)")
    lo = prompt_command("localize", _localize, "where in the image a prompt is memorized: a per-pixel map", seeds=8)
    lo.add_argument("--steps", type=int, default=50)
    lo.add_argument("--guidance", type=float, default=7.5)
    lo.add_argument("--step", type=int, help="DDIM step of the map (default: where the signal-to-noise ratio reaches 1)")
    bench = sub.add_parser("bench", help="leaderboard of every signal on the mixture and the testbed")
    bench.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    bench.add_argument("--seeds", type=int, default=4)
    bench.add_argument("--steps", type=int, default=50)
    bench.add_argument("--guidance", type=float, default=7.5)
    bench.add_argument("--mixture-conditions", type=int, default=20, help="memorized and generalizing mixture conditions each")
    bench.add_argument("--trained", action="append", metavar="FOLDER",
                       help="with --mitigation: a testbed trained with mitigation (testbed train --mitigate-threshold), "
                            "generated from plainly beside the inference-time methods (repeatable)")
    bench.add_argument("--max-prompts", type=int, help="evaluate at most this many testbed prompts (half memorized)")
    bench.add_argument("--out", default="bench_results", help="folder for tables and plots")
    bench.add_argument("--mitigation", action="store_true", help="the mitigation trade-off instead of the detector leaderboard")
    bench.add_argument("--no-progress", action="store_true")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"memgeo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"memgeo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
