"""The ``testbed`` commands: train the testbed, and measure its ground truth by generation."""

from __future__ import annotations

from pathlib import Path

from .._util import atomic_write_text, check_output
from ..testbed.protocol import protocol_names
from ..testbed.train import PRECISIONS, REGIMES
from ..testbed.criteria import CRITERIA
from ..testbed.items import MITIGATION_RULES
from .common import finite_float, no_loading_bars, positive_int, shared_arguments


#: ``testbed train`` options that a protocol fixes, refused beside ``--protocol`` (argparse destinations).
_PROTOCOL_FIXED = ("regime", "steps", "seed", "batch_size", "checkpoint_every", "lr_decay_steps", "mitigate_threshold",
                   "mitigate_rule",
                   "precision", "snapshot_every")


def _testbed_train(args) -> int:
    from ..testbed import train_testbed

    if args.protocol:
        from ..testbed.protocol import run_settings

        given = [f"--{k.replace('_', '-')}" for k in _PROTOCOL_FIXED if getattr(args, k) is not None]
        if given or not args.run:
            raise ValueError(f"--protocol trains a run exactly as its file says: give --run and none of {given}"
                             if given else "--protocol needs --run (one of the protocol's runs, e.g. primary-1)")
        kw = run_settings(args.protocol, args.run)
    elif args.run:
        raise ValueError("--run names a run of a protocol: give --protocol too (e.g. --protocol sd-bench)")
    else:
        kw = dict(regime=args.regime or "small-data", steps=args.steps, seed=args.seed or 0, batch_size=args.batch_size or 64,
                  checkpoint_every=args.checkpoint_every or 500, mitigate_threshold=args.mitigate_threshold,
                  mitigate_rule=args.mitigate_rule,
                  lr_decay_steps=args.lr_decay_steps, precision=args.precision or "float32")
    kw.setdefault("snapshot_every", args.snapshot_every)
    out = train_testbed(args.out, progress=not args.no_progress, device=args.device, overwrite=args.overwrite, **kw)
    print(f"testbed saved in {out} (Stable Diffusion layout); next: memgeo testbed truth --model {out}")
    return 0


def _testbed_finetune(args) -> int:
    from ..testbed import TESTBED_DIR, train_testbed

    base = Path(args.base) if args.base else TESTBED_DIR
    out = train_testbed(args.out, regime="finetune", base=base, steps=args.steps, seed=args.seed,
                        checkpoint_every=args.checkpoint_every, snapshot_every=args.snapshot_every,
                        progress=not args.no_progress, device=args.device, overwrite=args.overwrite)
    print(f"LoRA fine-tune saved in {out} (diffusers' LoRA format); next: memgeo testbed truth --model {out}, or "
          f"memgeo scan --model {base} --lora {out}")
    return 0


def _check_truth_target(out: Path, model: Path, *, overwrite: bool) -> None:
    """``testbed truth`` replaces no ground truth, and no file but its model's own unlabelled testbed.json, unless
    ``--overwrite``."""
    import json

    if overwrite or not out.exists():
        return
    try:
        held = json.loads(out.read_text())
    except (OSError, ValueError):
        held = None
    own = out.resolve() == (model / "testbed.json").resolve()
    if own and isinstance(held, dict) and "ground_truth" not in held:
        return
    what = (f"ground truth from {held['ground_truth'].get('seeds')} seeds" if isinstance(held, dict)
            and isinstance(held.get("ground_truth"), dict) else "a file that is not this model's testbed.json")
    raise ValueError(f"--out {str(out)!r} already holds {what}; give another --out, or --overwrite to replace it")


def _truth_settings(args) -> tuple[int, int, float]:
    """``(seeds, steps, guidance)`` of ``testbed truth``: a protocol's label settings (``--protocol``; any of the three
    given beside it is refused), else the flags, defaulting to 16 seeds, 50 steps, guidance 7.5."""
    if args.protocol:
        from ..testbed.protocol import label_seeds, load_protocol

        given = [f for f, v in (("--seeds", args.seeds), ("--steps", args.steps), ("--guidance", args.guidance))
                 if v is not None]
        if given:
            raise ValueError(f"--protocol labels with its own settings: give none of {given} beside it")
        labels = load_protocol(args.protocol)["labels"]
        seeds = label_seeds(args.protocol)
        if seeds != list(range(len(seeds))):
            raise ValueError(f"protocol {args.protocol!r}: label seeds must count from 0, got {seeds[:3]}...")
        return len(seeds), labels["n_steps"], labels["guidance_scale"]
    return (16 if args.seeds is None else args.seeds, 50 if args.steps is None else args.steps,
            7.5 if args.guidance is None else args.guidance)


def _testbed_truth(args) -> int:
    import json

    from ..testbed import (
        TESTBED_DIR,
        duplication_curve,
        format_duplication_curve,
        format_truth_summary,
        load_testbed,
        memorization_ground_truth,
        testbed_data,
        testbed_metadata,
    )
    from ..testbed.truth import copy_gallery

    path = Path(args.model) if args.model else TESTBED_DIR
    out = Path(args.out) if args.out else None
    package = TESTBED_DIR.resolve()
    if out is None:
        if path.resolve() == package:
            raise ValueError("--out is required for the embedded testbed: its testbed.json is part of the installed "
                             "package (give a file path such as truth.json)")
        out = path / "testbed.json"
    check_output(out)
    if args.gallery:
        check_output(args.gallery, arg="--gallery", suffixes=(".png",))
    seeds, steps, guidance = _truth_settings(args)
    _check_truth_target(out, path, overwrite=args.overwrite)
    if args.no_progress:
        no_loading_bars()
    model = load_testbed(path)
    meta = testbed_metadata(path)
    generations: dict = {}
    rows = memorization_ground_truth(model, meta["prompts"], seeds=seeds, n_steps=steps,
                                     guidance_scale=guidance, progress=not args.no_progress, generations=generations)
    meta["prompts"] = rows
    meta["ground_truth"] = {"seeds": seeds, "n_steps": steps, "guidance_scale": guidance,
                            **({"protocol": args.protocol} if args.protocol else {}),
                            "criterion": {"level": rows[0]["criterion"],
                                          **{name: c.ratio_below for name, c in CRITERIA.items()}}}
    atomic_write_text(out, json.dumps(meta, indent=1))
    print(f"wrote {out}")
    if args.gallery:
        from ..plotting import plot_copy_gallery

        data = testbed_data(path)
        plot_copy_gallery(copy_gallery(data, rows, generations, criterion=args.criterion), args.gallery,
                          title=f"{path.name}: {meta['steps']} steps, {rows[0]['criterion']} level, {args.criterion} "
                                f"(ratio < {CRITERIA[args.criterion].ratio_below:.2g})")
        print(f"wrote {args.gallery}")
    for name in CRITERIA:
        print(format_truth_summary(rows, name))
        print(format_duplication_curve(duplication_curve(meta, name)))
    return 0


_OVERWRITE_HELP = ("train from scratch into an --out that holds a trained model or ground truth, replacing it "
                   "(refused without it; the same run resumes its own checkpoint without it)")


def register(sub) -> None:
    tb = sub.add_parser("testbed", help="the memorization testbed: train it, or measure which prompts it memorized")
    tb_sub = tb.add_subparsers(dest="testbed_command", required=True)
    train = tb_sub.add_parser("train", help="train the testbed (seeded, resumable from its checkpoint)")
    shared_arguments(train, out=dict(required=True, help="output folder (Stable Diffusion layout; resumes a checkpoint "
                                                         "there)"),
                     steps=dict(default=None, help="training steps of batch 64 (default: the regime's)"),
                     device=dict(help="where the networks train (cpu, cuda); the data drawn is the same"), no_progress={})
    train.add_argument("--protocol", choices=protocol_names(),
                       help="train a run of a benchmark protocol (memgeo/testbed/protocols/) exactly as its file "
                            "fixes it: regime, steps, schedule, weight averaging, precision, seed, checkpoints")
    train.add_argument("--run", help="with --protocol: which of its runs (e.g. primary-1, uniform-dropout)")
    train.add_argument("--regime", choices=tuple(REGIMES),
                       help="the training data and schedule (memgeo.testbed.REGIMES, where each is described; default "
                            "small-data): " + ", ".join(f"{name} ({spec['steps']} steps)" for name, spec in REGIMES.items()))
    train.add_argument("--batch-size", type=positive_int, help="default 64")
    train.add_argument("--seed", type=int, help="default 0")
    train.add_argument("--checkpoint-every", type=positive_int, help="default 500")
    train.add_argument("--snapshot-every", type=positive_int, metavar="N",
                       help="also save the model every N steps in OUT/snapshots/step-N, loadable while the run goes on")
    train.add_argument("--lr-decay-steps", type=int, metavar="N",
                       help="decay the learning rate linearly towards 0 over the last N steps (default: the regime's, "
                            "else a constant rate); a constant-rate checkpoint resumes into a decay that starts at it")
    train.add_argument("--mitigate-threshold", type=finite_float, metavar="X",
                       help="training-time mitigation (Wen et al. 2024): leave out of the loss every sample whose "
                            "guidance-gap norm |eps(x_t, caption) - eps(x_t, '')| is at least X")
    train.add_argument("--mitigate-rule", choices=tuple(MITIGATION_RULES),
                       help="the same filter with a label-free threshold: 'fence' leaves a sample out where its gap "
                            "norm reaches the far-out fence q3 + {k:g} (q3 - q1) of the norms the run's last {window} "
                            "batches had in its timestep bin ({bins} bins), from step {start} on (memgeo.testbed.items."
                            "MITIGATION_RULES); not beside --mitigate-threshold".format(**MITIGATION_RULES["fence"]))
    train.add_argument("--precision", choices=tuple(PRECISIONS),
                       help="float32 (the default); bfloat16: mixed precision (bfloat16 autocast; weights, gradients and AdamW in float32), "
                            "1.35-1.54x float32's samples per second on a CPU with bfloat16 arithmetic (AMX or "
                            "AVX512-BF16), 7x slower on AVX2 alone "
                            "(benchmarks/bench_training.py); a run resumes only in the precision it began in")
    train.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    train.set_defaults(func=_testbed_train)
    ft = tb_sub.add_parser("finetune", help="LoRA fine-tune a trained testbed on new canvases with known copies "
                                            "(REGIMES['finetune']; resumable)")
    ft.add_argument("--base", help="the trained testbed folder to fine-tune (default: the embedded testbed)")
    shared_arguments(ft, out=dict(required=True, help="output folder: the LoRA adapter and testbed.json (resumes a "
                                                      "checkpoint there)"),
                     steps=dict(default=None, help="training steps of batch 64 (default: the regime's)"), device={},
                     no_progress={})
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--checkpoint-every", type=positive_int, default=250)
    ft.add_argument("--snapshot-every", type=positive_int, metavar="N", help="also save the adapter every N steps")
    ft.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    ft.set_defaults(func=_testbed_finetune)
    truth = tb_sub.add_parser("truth", help="ground truth by generation: how often each prompt copies its target")
    shared_arguments(truth, model=dict(help="testbed folder (default: the embedded testbed)"),
                     out=dict(help="where to write the testbed.json with the measured rates (default: the --model "
                                   "folder's testbed.json; required for the embedded testbed, which is never rewritten)"),
                     seeds=dict(default=None, help="initial-noise seeds per prompt, 0 to N-1 (default 16)"),
                     steps=dict(default=None, help="DDIM steps (default 50)"),
                     guidance=dict(default=None, help="classifier-free guidance scale (default 7.5)"), no_progress={})
    truth.add_argument("--protocol", choices=protocol_names(),
                       help="label by a benchmark protocol's settings (its label seeds, steps and guidance)")
    truth.add_argument("--overwrite", action="store_true",
                       help="replace ground truth (or another file) already at --out")
    truth.add_argument("--gallery", metavar="PNG", help="also draw, per kind and duplication, generations beside their "
                                                       "nearest training images: what each label means")
    truth.add_argument("--criterion", choices=tuple(CRITERIA), default="verbatim",
                       help="whose labels the gallery shows: verbatim copies (ratio < 1/3, the default) or the looser "
                            "replication level (the prompt's own image nearest, ratio < 1/2); testbed.json keeps both")
    truth.set_defaults(func=_testbed_truth)
