"""Figure helpers: every matplotlib figure memgeo draws. matplotlib is imported here only, and lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["draw_branch_diagnostic", "save_figure"]


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
