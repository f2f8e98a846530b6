"""The ``scan`` command: memorization signals for prompt files on a checkpoint, resumable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..detect import DEFAULT_SIGNALS, PRESET_NAMES, SIGNALS
from .common import LABELS, load_model, positive_int, probability, shared_arguments

__all__ = ["register", "signal_options"]


def _scoring_start(model, lora, n: int) -> int:
    """The first seed a scan generates from: a testbed with ground truth (the embedded one by default), or a LoRA
    fine-tune with ground truth given as ``--lora``, is scanned on its scoring seeds, apart from the seeds that
    labelled either (checked); any other model from seed 0."""
    from ..testbed import TESTBED_DIR, testbed_metadata
    from ..testbed.protocol import scoring_start

    folders = [Path(model) if model else TESTBED_DIR] + ([Path(lora)] if lora and Path(lora).is_dir() else [])
    return scoring_start([testbed_metadata(f) for f in folders if (f / "testbed.json").is_file()], n)


def _scan(args) -> int:
    from .._util import check_output
    from ..scan.readers import read_prompts
    from ..scan.run import ScanConfig, ScanInterrupted, check_model_settings, resolve_probe_times, run_scan

    check_output(args.out)
    if args.report:
        check_output(args.report, arg="--report")
    if args.labels and len(args.labels) != len(args.prompts):
        raise ValueError(f"--labels needs one label per --prompts file ({len(args.prompts)}), got {len(args.labels)}")
    records = []
    for i, path in enumerate(args.prompts):
        recs = read_prompts(path)[: args.limit] if args.limit else read_prompts(path)
        if args.labels:
            lab = args.labels[i].lower()
            if lab not in LABELS:
                raise ValueError(f"--labels entries must be one of {sorted(LABELS)}, got {args.labels[i]!r}")
            if LABELS[lab] is not None:
                for r in recs:
                    r.label = LABELS[lab]
        records += recs
    start = _scoring_start(args.model, args.lora, args.seeds)
    cfg = ScanConfig(signals=tuple(args.signals), seeds=tuple(range(start, start + args.seeds)), n_steps=args.steps,
                     guidance_scale=args.guidance, n_directions=args.directions, preset=args.preset,
                     options=signal_options(args))
    if args.rank_by is not None and args.rank_by not in cfg.signals:
        raise ValueError(f"--rank-by must be one of the scanned --signals {list(cfg.signals)}, got {args.rank_by!r}")
    ref_records = [r for path in args.reference for r in read_prompts(path)] if args.reference else None
    model, _ = load_model(args)
    check_model_settings(model, cfg)  # ranges that depend on the model, before any evaluation
    training = None
    if args.training_images:  # checked (and encoded) before any signal is computed
        from ..scan.audit import load_training_images

        training = load_training_images(model, args.training_images)
    if ref_records:  # probe times chosen from the reference prompts, the same for both scans
        cfg = resolve_probe_times(model, cfg, [r.text for r in ref_records])
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
    if training is not None:
        from ..scan.audit import audit_copies, format_audit

        texts = list(dict.fromkeys(r.text for r in records))
        audit = audit_copies(model, texts, training, seeds=cfg.seeds, n_steps=cfg.n_steps, guidance_scale=cfg.guidance_scale,
                             ratio=args.copy_ratio, out=Path(args.out).parent,
                             gallery=Path(args.out).parent / "copies.png", progress=not args.no_progress)
        print("\n" + format_audit(audit))
    return 0


def _scan_report(args, result, reference, cfg) -> None:
    """The summary, the ranked and flagged report, the histogram and (with labels) the ROC plot."""
    from ..plotting import plot_roc, plot_score_histogram
    from ..scan.report import calibrate, format_report, report_rows, write_report
    from ..scan.report import prompt_scores, summarize

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


def register(sub) -> None:
    scan = sub.add_parser("scan", help="compute memorization signals for prompt files on a checkpoint (resumable)")
    shared_arguments(scan, model=dict(help="Stable Diffusion folder (or hub id with --allow-download); default: the "
                                           "embedded testbed"),
                     lora={}, seeds={}, steps={}, guidance={},
                     out=dict(required=True, help="results file (JSON lines; an existing one is resumed)"),
                     device={}, no_progress={})
    scan.add_argument("--training-images", metavar="FOLDER",
                      help="a fine-tune audit: report which prompts' generations copy these images (decoded by the "
                           "model's VAE; nearest / second-nearest distinct image distance below --copy-ratio, whole "
                           "image or a patch; copies.json and a gallery copies.png beside --out)")
    scan.add_argument("--copy-ratio", type=probability, default=1 / 3,
                      help="with --training-images: a generation copies when its distance to the nearest distinct "
                           "training image is below this fraction of that to the second nearest (default 1/3, Gu et al.)")
    scan.add_argument("--prompts", nargs="+", required=True, help="prompt files: .jsonl (caption), .txt, .csv (Caption)")
    scan.add_argument("--labels", nargs="+", help="one label per prompt file: mem|1, nmem|0, or auto (from the file)")
    scan.add_argument("--signals", nargs="+", default=list(DEFAULT_SIGNALS), choices=sorted(SIGNALS),
                      metavar="SIGNAL", help=f"signals to compute (default: {' '.join(DEFAULT_SIGNALS)}; all: "
                                             f"{' '.join(SIGNALS)})")
    scan.add_argument("--preset", choices=PRESET_NAMES, default="memgeo",
                      help="signal settings: memgeo (defaults that hold on any model) or official (each paper's "
                           "released code); see docs/conventions.md")
    scan.add_argument("--directions", type=positive_int, help="kappa-delta directions per step, and 4x as many p-Laplace "
                                                     "directions (default: the preset's, 4 and 16 under memgeo)")
    signal_options = scan.add_argument_group("options of one signal (its settings, memgeo.detect.settings; unset: "
                                             "the --preset's)")
    for name, spec in SIGNALS.items():
        for option in spec.extra:
            signal_options.add_argument(option.flag, dest=f"option:{name}:{option.name}", choices=option.choices,
                                        type=option.type, help=f"{name}: {option.help}")
    scan.add_argument("--limit", type=positive_int, help="take at most this many prompts from each file")
    scan.add_argument("--reference", nargs="+", metavar="FILE",
                      help="unlabelled ordinary prompts: each signal's threshold is their (1 - fpr) quantile, and "
                           "scanned prompts above it are flagged (scanned and cached like any prompts)")
    scan.add_argument("--fpr", type=probability, default=0.01, help="false-positive rate for --reference (default 0.01)")
    scan.add_argument("--rank-by", metavar="SIGNAL", help="signal that ranks the report (default: the first --signals)")
    scan.add_argument("--report", help="report file of every prompt, ranked: .csv, or markdown otherwise "
                                       "(default: beside --out, OUT.report.md)")
    scan.add_argument("--batch-size", type=positive_int, default=8,
                      help="prompts (all their seeds) per model call, for every signal (generation signals: each row "
                           "with its own seeded directions; default 8; results equal those of 1)")
    scan.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="dtype of the estimator math")
    scan.add_argument("--allow-download", action="store_true", help="allow fetching a hub id (off by default)")
    scan.set_defaults(func=_scan)


def signal_options(args) -> dict:
    """``{signal: {option: value}}`` from the flags of :data:`~memgeo.detect.SIGNALS`' options that were given."""
    options: dict = {}
    for key, value in vars(args).items():
        if key.startswith("option:") and value is not None:
            _, name, option = key.split(":")
            options.setdefault(name, {})[option] = value
    return options
