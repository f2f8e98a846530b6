"""The ``generate`` command: images for a prompt, with or without a mitigation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .._util import PRESET_NAMES, atomic_write_text, check_output, flag_name
from ..plotting import save_image_grid
from .common import finite_float, load_model, nonempty_text, shared_arguments


def _generate(args) -> int:
    import json

    import torch

    from ..mitigate import calibrate_steering, generate
    from ..sampling import initial_noise
    from ..testbed import TESTBED_DIR, testbed_folder, testbed_metadata

    check_output(args.out, folder=True)
    settings = method_settings(args)  # the method's own flags, checked before any work
    folders = [Path(args.model) if args.model else TESTBED_DIR] + ([Path(args.lora)] if args.lora else [])
    if args.mitigate == "steer" and not args.reference_prompts and not any((f / "testbed.json").is_file() for f in folders):
        raise ValueError("--mitigate steer needs --reference-prompts (ordinary prompts to calibrate on) for this model")
    model, path = load_model(args)
    model.timesteps(args.steps)  # --steps against the model's timesteps, before any evaluation
    x_T = initial_noise(model, args.seeds)
    reference = None
    if args.mitigate == "steer":
        if testbed_folder(model) is not None:
            calib = [p["text"] for p in testbed_metadata(testbed_folder(model))["prompts"] if p["kind"] == "ordinary"][::8]
        elif args.reference_prompts:
            from ..scan.readers import read_prompts

            calib = [r.text for r in read_prompts(args.reference_prompts)]
        else:
            raise ValueError("--mitigate steer needs --reference-prompts (ordinary prompts to calibrate on) for this model")
        from ..mitigate.presets import SteerSettings

        n_directions = SteerSettings.resolve(settings, args.preset).n_directions  # as the steered generation reads
        reference = calibrate_steering(model, calib, x_T, n_steps=args.steps, guidance_scale=args.guidance,
                                       n_directions=n_directions, progress=not args.no_progress)
    g = generate(model, args.prompt, x_T, method=args.mitigate, strength=args.strength, n_steps=args.steps,
                 guidance_scale=args.guidance, reference=reference, preset=args.preset, settings=settings,
                 progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(model, "to_image", None) is not None:  # latents that are images (the testbed)
        imgs = torch.stack([model.to_image(s) for s in g.samples.float()]).clamp(-1, 1)
    else:  # no VAE is loaded: show the first latent channel
        imgs = g.samples.float()[:, 0]
    save_image_grid(imgs, out / "samples.png", title=f"{args.prompt!r} ({args.mitigate})")
    info = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in g.info.items()}
    atomic_write_text(out / "signals.json", json.dumps({"prompt": args.prompt, "mitigate": args.mitigate,
                                                        "preset": args.preset, "strength": args.strength,
                                                        "settings": settings.as_options() if settings else None,
                                                        "seeds": args.seeds, "n_evals_per_sample": g.n_evals, **info},
                                                       indent=1))
    print(f"wrote {out / 'samples.png'} and {out / 'signals.json'} ({g.n_evals} UNet evaluations per sample)")
    return 0


def method_settings(args):
    """The chosen method's settings from its ``--METHOD-OPTION`` flags (over ``--preset``'s), or None where none was
    given; a flag of another method is refused, naming both."""
    from ..mitigate import METHODS

    given: dict = {}
    for key, value in vars(args).items():
        if key.startswith("method_option:") and value is not None:
            _, name, option = key.split(":")
            if name != args.mitigate:
                raise ValueError(f"{flag_name(name, option)} is an option of --mitigate {name}, not of "
                                 f"--mitigate {args.mitigate}")
            given[option] = value
    if not given:
        return None
    return METHODS[args.mitigate].settings_type.resolve(None, args.preset, **given)


def register(sub) -> None:
    from ..mitigate import METHODS

    gen = sub.add_parser("generate", help="generate images for a prompt, with or without a mitigation")
    gen.add_argument("--prompt", required=True, type=nonempty_text)
    shared_arguments(gen, model={}, lora={}, seeds=dict(default=8), steps={}, guidance={},
                     out=dict(default="generations", help="folder (made if new; no image suffix) for samples.png and "
                                                                  "signals.json"), no_progress={})
    gen.add_argument("--mitigate", choices=tuple(METHODS), default=next(iter(METHODS)),
                     help="; ".join(f"{m.name}: {m.source}" for m in METHODS.values()))
    gen.add_argument("--strength", type=finite_float,
                     help="the method's strength: " + "; ".join(f"{m.name}: {m.strength}" for m in METHODS.values()
                                                               if m.strength != "unused"))
    gen.add_argument("--preset", choices=PRESET_NAMES, default="memgeo",
                     help="the method's settings: memgeo or official (the released code)")
    options = gen.add_argument_group("options of one method (its settings, memgeo.mitigate.presets; unset: the "
                                     "--preset's)")
    for m in METHODS.values():
        for f in dataclasses.fields(m.settings_type) if m.settings_type else ():
            if f.metadata["flag"]:
                options.add_argument(flag_name(m.name, f.name), dest=f"method_option:{m.name}:{f.name}",
                                     choices=f.metadata["choices"], type=f.metadata["type"],
                                     help=f"{m.name}: {f.metadata['help']}")
    gen.add_argument("--reference-prompts", help="ordinary prompts to calibrate steering on (non-testbed models)")
    gen.set_defaults(func=_generate)
