"""Figure helpers: every matplotlib figure memgeo draws. matplotlib is imported here only, and lazily."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .explain import Localization, TokenAttribution

__all__ = ["save_figure", "draw_branch_diagnostic", "plot_duplication_curve", "draw_trajectory_auroc", "plot_trajectory_auroc",
           "plot_tradeoff", "plot_token_attribution", "plot_localization", "plot_roc", "plot_score_histogram", "save_image_grid",
           "plot_copy_gallery", "plot_rank_stability", "plot_cost_front"]


def save_figure(fig, path, *, dpi: int = 120) -> Path:
    """Lay out, save and close ``fig``; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def draw_branch_diagnostic(axes, diag: dict, labels, *, names=("memorized", "ordinary")) -> None:
    """Draw :func:`~memgeo.detect.branch_diagnostic` on four axes: per step, the mean (and 10-90%
    band) of each curve for the columns labelled 1 (``names[0]``) and 0 (``names[1]``)."""
    from .detect.diagnostics import BRANCH_CURVES

    y = np.asarray(labels)
    titles = {"cos_c": "cos(eps_c, n)", "cos_u": "cos(eps_u, n)", "cos_gap": "cos(eps_c - eps_u, n) = -kappa-delta",
              "gap_norm": "|eps_c - eps_u|"}
    for ax, key in zip(np.ravel(axes), BRANCH_CURVES):
        v = diag[key].double().numpy()
        steps = np.arange(1, v.shape[0] + 1)
        for cls, color, name in ((1, "C3", names[0]), (0, "C0", names[1])):
            k = v[:, y == cls]
            if k.size == 0:
                continue
            ax.plot(steps, k.mean(1), color=color, label=name)
            ax.fill_between(steps, np.percentile(k, 10, 1), np.percentile(k, 90, 1), color=color, alpha=0.2)
        ax.set_title(titles[key], fontsize=9)
        ax.set_xlabel("DDIM step (1 = pure noise)")
        ax.legend(fontsize=7)


def plot_duplication_curve(rows: list[dict], path) -> None:
    """Mean memorization rate against duplication count (log axis), one line per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        ax.plot([r["duplication"] for r in rs], [r["mean_rate"] for r in rs], "o-", label=kind)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("copies in training")
    ax.set_ylabel("memorization rate (generations copying)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("memorization against duplication, testbed")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


def draw_trajectory_auroc(ax, curves: dict):
    """Draw per-step AUROC curves (from :func:`per_step_auroc`) on a matplotlib axis."""
    for name, v in curves.items():
        ax.plot(np.arange(1, len(v) + 1), v, label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("DDIM step (1 = pure noise)")
    ax.set_ylabel("AUROC (memorized vs ordinary)")
    ax.set_ylim(0.0, 1.02)
    ax.legend(fontsize=8)


def plot_trajectory_auroc(curves: dict, path, *, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    draw_trajectory_auroc(ax, curves)
    ax.set_title(title)
    return save_figure(fig, path, dpi=120)


def plot_tradeoff(rows, path, front=(), ax=None, *, target=None):
    """Memorization rate against memorized-prompt fidelity, a line per method, each point coloured by the change of
    the ordinary prompts' fidelity (where the rows carry ``ordinary_change``), the Pareto front dashed (into ``ax``
    when given, else saved to ``path``). ``target``: ``(rate below, fidelity at least)``, shaded."""
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7, 4.8))
    coloured = all("ordinary_change" in r for r in rows)
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        ax.plot([r["memorization_rate"] for r in rs], [r["fidelity_memorized"] for r in rs], "-" if coloured else "o-",
                label=method, lw=1, ms=4, alpha=0.8)
    if coloured:
        dots = ax.scatter([r["memorization_rate"] for r in rows], [r["fidelity_memorized"] for r in rows],
                          c=[r["ordinary_change"] for r in rows], cmap="RdYlGn", vmin=-0.2, vmax=0.2, s=22,
                          edgecolors="k", linewidths=0.4, zorder=3)
        ax.figure.colorbar(dots, ax=ax, label="ordinary prompts' fidelity change")
    if target is not None:  # the box where a row meets the rate and the fidelity bounds
        from matplotlib.patches import Rectangle

        top = max(1.0, max(r["fidelity_memorized"] for r in rows))
        ax.add_patch(Rectangle((0.0, target[1]), target[0], top - target[1], facecolor="0.85", edgecolor="0.3", lw=0.8,
                               ls=":", zorder=0, label="target: rate and fidelity kept"))
    if front:
        ax.plot([r["memorization_rate"] for r in front], [r["fidelity_memorized"] for r in front], "k--", lw=0.8,
                label="Pareto front")
    ax.set_xlabel("memorization rate (copies of the training canvases, memorized prompts)")
    ax.set_ylabel("fidelity: cells showing the captioned digit")
    ax.set_title("fidelity-memorization trade-off, testbed")
    ax.legend(fontsize=6)
    if own:
        save_figure(fig, path, dpi=120)


def plot_token_attribution(att: TokenAttribution, path, *, title: str = "", ax=None):
    """Bar plot of the token attributions (gradient and, when computed, leave-one-out, each scaled to its maximum)."""
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(att.tokens) + 1.5), 2.6))
    x = torch.arange(len(att.tokens)).numpy()
    series = [(n, v) for n, v in (("gradient", att.gradient), ("leave-one-out", att.leave_one_out)) if v is not None]
    width = 0.8 / len(series)
    for j, (name, vals) in enumerate(series):
        v = torch.tensor(vals, dtype=torch.float64)
        scale = float(v.abs().max()) or 1.0
        ax.bar(x + (j - (len(series) - 1) / 2) * width, (v / scale).numpy(), width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(att.tokens, rotation=60, fontsize=7)
    ax.set_ylabel("attribution / max")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    if own:
        save_figure(fig, path, dpi=110)
    return Path(path) if path is not None else None


def plot_localization(model, loc: Localization, path, *, cross_attention=None, mask=None, title: str = "", axes=None):
    """The mean generated image, the memorization map over it (mask outlined when given) and the
    cross-attention baseline."""
    import matplotlib

    if axes is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = axes is None
    n = 2 + (cross_attention is not None)
    if own:
        fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.6))
    from .explain.localization import image_map

    img = image_map(model, loc.samples.float().mean(0)) if getattr(model, "to_image", None) is not None else None
    panels = [("mean sample" if img is not None else "mean latent (channel 0)",
               img if img is not None else loc.samples.float().mean(0)[0], "gray_r")]
    panels.append((f"map, step {loc.step}", loc.map, "magma"))
    if cross_attention is not None:
        panels.append(("cross-attention (end token)", cross_attention, "magma"))
    for ax, (name, m, cmap) in zip(axes, panels):
        ax.imshow(torch.as_tensor(m).numpy(), cmap=cmap)
        if mask is not None and torch.as_tensor(mask).shape == torch.as_tensor(m).shape:
            ax.contour(torch.as_tensor(mask).numpy(), levels=[0.5], colors="c", linewidths=1.0)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    if own:
        if title:
            fig.suptitle(title, fontsize=8)
        save_figure(fig, path, dpi=110)
    return Path(path) if path is not None else None


def plot_roc(metrics: dict, path: str | Path, *, title: str = "ROC, per prompt") -> Path:
    """ROC curves of every signal with labels, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .detect import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, m in metrics.items():
        f, t, _ = roc_curve(m["labels"], m["scores"])
        ax.plot(f, t, label=f"{name} (AUROC {m['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path, dpi=120)


def plot_cost_front(points: list[dict], path: str | Path, *, title: str = "cost against accuracy") -> Path:
    """Each signal's prompt-level AUROC (95% interval) against its evaluations per sample
    (:func:`memgeo.experiments.front.cost_front`), the Pareto front drawn, memgeo's own detectors as stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for q in points:
        ax.errorbar(q["evals"], q["auroc"], yerr=[[q["auroc"] - q["low"]], [q["high"] - q["auroc"]]],
                    fmt="*" if q["own"] else "o", ms=11 if q["own"] else 6, capsize=2,
                    color="C3" if q["own"] else "C0")
        ax.annotate(q["signal"], (q["evals"], q["auroc"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = [q for q in points if q["front"]]
    ax.step([q["evals"] for q in front], [q["auroc"] for q in front], where="post", color="grey", lw=1, ls="--")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("UNet evaluations per sample (beyond a generation run anyway)")
    ax.set_ylabel("AUROC per prompt")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    return save_figure(fig, path, dpi=120)


def plot_rank_stability(stability: dict, path: str | Path) -> Path:
    """Each signal's prompt-level AUROC on each model (:func:`memgeo.experiments.pool.rank_stability`), one line per
    signal across the models, Kendall's tau in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(stability["auroc"])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(models) + 2.5), 4.2))
    for i, signal in enumerate(stability["signals"]):
        ax.plot(range(len(models)), [stability["auroc"][m][i] for m in models], marker="o", label=signal)
    ax.set_xticks(range(len(models)), [Path(m).name for m in models], rotation=15, fontsize=8)
    ax.set_ylabel("AUROC per prompt (all)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"signals across models: mean Kendall's tau {stability['mean_tau']:.2f}")
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    return save_figure(fig, path, dpi=120)


def plot_score_histogram(scores, path: str | Path, *, signal: str, calibration=None) -> Path:
    """Histogram of the scanned prompts' scores beside the reference's, with the threshold of ``calibration``
    (a :class:`~memgeo.scan.Calibration`, or None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.asarray(scores, dtype=float)
    s = s[np.isfinite(s)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ref = calibration.reference if calibration is not None else np.array([])
    both = np.concatenate([s, ref])
    bins = np.histogram_bin_edges(both, bins=30) if both.size else 10
    ax.hist(s, bins=bins, alpha=0.6, label=f"scanned ({s.size})")
    if calibration is not None:
        ax.hist(ref, bins=bins, alpha=0.6, label=f"reference ({ref.size})")
        ax.axvline(calibration.threshold, color="k", ls="--", lw=1, label=f"threshold (FPR {calibration.fpr:g})")
    ax.set_xlabel(f"{signal} score (mean over seeds)")
    ax.set_ylabel("prompts")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def save_image_grid(imgs, path, *, title: str) -> None:
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
    save_figure(fig, path, dpi=100)


def _show_image(ax, img: torch.Tensor) -> None:
    """An image in [-1, 1]: ``[H, W]`` or ``[1, H, W]`` in gray, ``[3, H, W]`` in colour."""
    img = img.detach().float().cpu()
    if img.dim() == 3 and img.shape[0] == 1:
        img = img[0]
    if img.dim() == 2:
        ax.imshow(img.numpy(), cmap="gray_r", vmin=-1, vmax=1)
    else:
        ax.imshow(((img.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())


def plot_copy_gallery(rows: list[dict], path, *, title: str = "") -> Path:
    """One row per prompt (:func:`~memgeo.testbed.copy_gallery`): its target, then each generation beside its nearest
    training image, titled with the nearest / second-nearest ratio, marked below the row's ``"bound"`` (a verbatim
    copy below 1/3 unless the row says otherwise: the replication level marks replicas below 1/2). A row whose
    ``"is_target"`` is None has no target (an audit of a fine-tune): its marks do not ask the nearest to be one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = max(len(r["generations"]) for r in rows)
    fig, axes = plt.subplots(len(rows), 1 + 2 * per, figsize=(0.95 * (1 + 2 * per), 1.05 * len(rows) + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for i, r in enumerate(rows):
        axes[i, 0].set_ylabel(r["label"].split(":")[0], fontsize=6, rotation=0, ha="right", va="center")
        if r["target"] is not None:
            _show_image(axes[i, 0], r["target"])
        axes[i, 0].set_title("target" if i == 0 else "", fontsize=6)
        hits = r["is_target"] if r["is_target"] is not None else [None] * len(r["ratios"])
        for j, (g, n, ratio, hit) in enumerate(zip(r["generations"], r["nearest"], r["ratios"], hits)):
            _show_image(axes[i, 1 + 2 * j], g)
            below = ratio < r.get("bound", 1 / 3)
            axes[i, 1 + 2 * j].set_title(f"r={ratio:.2f}" + (f" {r.get('mark', 'copy')}" if below else ""), fontsize=6,
                                         color="red" if below and hit is not False else "black")
            _show_image(axes[i, 2 + 2 * j], n)
            axes[i, 2 + 2 * j].set_title("nearest" + (" = target" if hit else ""), fontsize=5)
        axes[i, -1].text(1.05, 0.5, r["label"].split(": ", 1)[-1], transform=axes[i, -1].transAxes, fontsize=6,
                         va="center")
    fig.suptitle(title or "generations beside their nearest training images (ratio: nearest / second nearest)",
                 fontsize=8)
    return save_figure(fig, path, dpi=110)
