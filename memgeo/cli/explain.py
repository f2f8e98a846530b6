"""The ``explain`` and ``localize`` commands: which tokens drive memorization, and where in the image it sits."""

from __future__ import annotations

from pathlib import Path

from .._util import atomic_write_text, check_output
from ..testbed import testbed_folder, testbed_metadata
from .common import explain_target, load_model, nonempty_text, positive_int, shared_arguments


def _explain(args) -> int:
    import json

    from ..explain import token_attribution
    from ..plotting import plot_token_attribution

    check_output(args.out, folder=True)
    model, _ = load_model(args)
    model.timesteps(args.steps)
    settings = {"signal": args.signal, "method": "both", "seeds": args.seeds, "n_steps": args.steps}
    record = {"prompt": args.prompt, "model": model.identity, "settings": settings}
    path = explain_target(Path(args.out), "explain.json", record)
    att = token_attribution(model, args.prompt, signal=args.signal, seeds=args.seeds, n_steps=args.steps)
    atomic_write_text(path, json.dumps({**record, **{k: v for k, v in att.to_json().items() if k != "settings"}}, indent=1))
    png = plot_token_attribution(att, path.with_suffix(".png"), title=args.prompt)
    top = ", ".join(f"{att.tokens[i]!r} {att.scores[i]:.3g}" for i in att.ranking()[:5])
    print(f"{args.signal} {att.value:.4g}; tokens by gradient attribution: {top}")
    if att.spearman is not None:
        print(f"Spearman correlation of the gradient and leave-one-out rankings: {att.spearman:.3f}")
    print(f"wrote {path} and {png}")
    return 0


def _localize(args) -> int:
    import json

    if args.step is not None and args.step > args.steps:
        raise ValueError(f"--step must lie in [1, --steps={args.steps}], got {args.step}")
    from ..explain import cross_attention_map, localize, pixel_auroc
    from ..models.attention import has_cross_attention
    from ..plotting import plot_localization
    check_output(args.out, folder=True)
    model, folder = load_model(args)
    model.timesteps(args.steps)
    settings = {"seeds": args.seeds, "n_steps": args.steps, "guidance_scale": args.guidance, "step": args.step}
    record = {"prompt": args.prompt, "model": model.identity, "settings": settings}
    path = explain_target(Path(args.out), "localize.json", record)
    loc = localize(model, args.prompt, seeds=args.seeds, n_steps=args.steps, guidance_scale=args.guidance, step=args.step)
    attn = cross_attention_map(model, args.prompt, n_steps=args.steps, x_last=loc.x_last) if has_cross_attention(model) else None
    mask = None
    if testbed_folder(model) is not None:
        mask = next((p.get("mask") for p in testbed_metadata(testbed_folder(model))["prompts"] if p["text"] == args.prompt), None)
    result = {**record, "map": loc.map.tolist(), "shape": list(loc.map.shape), "step": loc.step, "t": loc.t,
              "cross_attention": attn.tolist() if attn is not None else None}
    if mask is not None:
        result["mask"] = mask
        result["pixel_auroc"] = {"map": pixel_auroc(loc.map, mask),
                                 "cross_attention": pixel_auroc(attn, mask) if attn is not None else None}
    atomic_write_text(path, json.dumps(result))
    png = plot_localization(model, loc, path.with_suffix(".png"), cross_attention=attn, mask=mask, title=args.prompt)
    print(f"memorization map at step {loc.step} (t = {loc.t}), image shape {tuple(loc.map.shape)}")
    if mask is not None:
        ca = result["pixel_auroc"]["cross_attention"]
        print(f"pixel AUROC against the prompt's mask: map {result['pixel_auroc']['map']:.3f}, "
              f"cross-attention {'n/a' if ca is None else format(ca, '.3f')}")
    print(f"wrote {path} and {png}")
    return 0


def register(sub) -> None:
    from ..explain.attribution import ATTRIBUTED

    def prompt_command(name: str, func, help: str, seeds: int, **extra):
        cmd = sub.add_parser(name, help=help)
        cmd.add_argument("--prompt", required=True, type=nonempty_text)
        shared_arguments(cmd, out=dict(required=True, help=f"folder for {name}.json and {name}.png"), model={}, lora={},
                         seeds=dict(default=seeds), **extra, no_progress={})
        cmd.set_defaults(func=func)
        return cmd

    ex = prompt_command("explain", _explain, "which tokens of a prompt drive its memorization signal "
                                             "(gradient and leave-one-out)", seeds=4,
                        steps=dict(help="DDIM steps (the signal is taken at the first)"))
    ex.add_argument("--signal", choices=ATTRIBUTED, default=ATTRIBUTED[0])
    lo = prompt_command("localize", _localize, "where in the image a prompt is memorized: a per-pixel map", seeds=8,
                        steps={}, guidance={})
    lo.add_argument("--step", type=positive_int, help="DDIM step of the map (default: where the signal-to-noise ratio reaches 1)")
