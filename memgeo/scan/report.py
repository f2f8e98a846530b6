"""What a practitioner reads after a scan: its summary, thresholds calibrated on ordinary prompts, a ranked report.

Calibration needs no labels: a reference set of ordinary prompts (prompts the user trusts not to
be memorized, scanned like any other) sets each signal's threshold at its ``(1 - fpr)`` quantile,
so that at most a fraction ``fpr`` of ordinary prompts would be flagged. Each scanned prompt is
then flagged when its score (the mean over its seeds) is above the threshold, and reported with
the FPR it was flagged at: the fraction of reference prompts scoring at least as high.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import check_nonnegative
from .._util import atomic_write_text
from ..detect import detection_metrics

__all__ = ["prompt_scores", "summarize", "Calibration", "calibrate", "report_rows", "format_report", "write_report"]


@dataclass
class Calibration:
    """A signal's threshold from reference scores.

    Attributes:
        signal: the signal's name.
        fpr: the target false-positive rate.
        threshold: the ``(1 - fpr)`` quantile of the reference scores (the next higher order statistic);
            a prompt is flagged when its score is above it.
        reference: the reference scores (one per reference prompt), sorted.
    """

    signal: str
    fpr: float
    threshold: float
    reference: np.ndarray

    def flags(self, scores) -> np.ndarray:
        """``score > threshold`` per prompt (NaN scores are never flagged)."""
        s = np.asarray(scores, dtype=float)
        return np.where(np.isfinite(s), s > self.threshold, False)

    def reference_fpr(self, scores) -> np.ndarray:
        """Per prompt, the fraction of reference scores at least as high: the FPR it would be flagged at."""
        s = np.asarray(scores, dtype=float)
        n = len(self.reference)
        return np.where(np.isfinite(s), (n - np.searchsorted(self.reference, s, side="left")) / n, np.nan)


def calibrate(reference_scores, *, fpr: float = 0.01, signal: str = "") -> Calibration:
    """Threshold at the ``(1 - fpr)`` quantile of unlabelled ordinary prompts' scores.

    The empirical FPR on the reference is at most ``fpr``. With fewer than ``1 / fpr`` reference
    prompts the threshold is their maximum, and the achieved FPR can only be bounded by ``1 / n``: a
    warning says so.
    """
    fpr = check_nonnegative("fpr", fpr)
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
    ref = np.asarray(reference_scores, dtype=float).reshape(-1)
    ref = np.sort(ref[np.isfinite(ref)])
    if ref.size == 0:
        raise ValueError("reference_scores must hold at least one finite score")
    if ref.size * fpr < 1:
        warnings.warn(f"{ref.size} reference prompts cannot resolve an FPR of {fpr}: at least {math.ceil(1 / fpr)} "
                      f"are needed; the threshold is their maximum", stacklevel=2)
    threshold = float(np.quantile(ref, 1.0 - fpr, method="higher"))
    return Calibration(signal, fpr, threshold, ref)


def report_rows(result, signal: str, calibration: Calibration | None = None) -> list[dict]:
    """One row per scanned prompt, ranked by ``signal`` (highest first): mean and spread over its
    seeds, and with a calibration, the flag and the FPR it was flagged at."""
    s = result.scores(signal)  # [prompts, seeds]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN prompts stay NaN
        mean, spread = np.nanmean(s, axis=1), np.nanstd(s, axis=1)
    rows = []
    for p, m, sd, per_seed in zip(result.prompts, mean, spread, s):
        row = {"prompt": p.text, "source": p.key, "label": p.label, "mean": float(m), "spread": float(sd),
               "seeds": int(np.isfinite(per_seed).sum())}
        if calibration is not None:
            row["flagged"] = bool(calibration.flags([m])[0])
            row["fpr"] = float(calibration.reference_fpr([m])[0])
        rows.append(row)
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["mean"] if math.isfinite(rows[i]["mean"]) else math.inf, i))
    return [dict(rank=r + 1, **rows[i]) for r, i in enumerate(order)]


def format_report(rows: list[dict], *, signal: str, top: int = 20, calibration: Calibration | None = None) -> str:
    """A markdown table of the ``top`` rows."""
    head = f"prompts ranked by {signal} (mean over seeds, larger = more likely memorized)"
    if calibration is not None:
        n_flag = sum(r["flagged"] for r in rows)
        head += (f"; flagged above {calibration.threshold:.4g}, the {1 - calibration.fpr:.0%} quantile of "
                 f"{len(calibration.reference)} reference prompts (FPR {calibration.fpr:g}): {n_flag} of {len(rows)}")
    cols = ["rank", "mean", "spread"] + (["flagged", "fpr"] if calibration is not None else []) + ["prompt"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows[:top]:
        cells = [str(r["rank"]), f"{r['mean']:.4g}", f"{r['spread']:.3g}"]
        if calibration is not None:
            cells += ["yes" if r["flagged"] else "no", f"{r['fpr']:.3g}"]
        text = r["prompt"] if len(r["prompt"]) <= 70 else r["prompt"][:67] + "..."
        cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > top:
        lines.append(f"\n({len(rows) - top} more in the report file)")
    return "\n".join(lines)


def write_report(rows: list[dict], path: str | Path, *, signal: str, calibration: Calibration | None = None) -> Path:
    """Every row, as CSV (``.csv``) or a markdown table (anything else)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["rank"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        atomic_write_text(path, format_report(rows, signal=signal, top=len(rows), calibration=calibration) + "\n")
    return path


def prompt_scores(result, signal: str):
    """Per prompt: (labels, mean score over its seeds, texts)."""
    s = result.scores(signal)
    return [p.label for p in result.prompts], np.nanmean(s, axis=1) if s.size else s, [p.text for p in result.prompts]


def summarize(result, *, convention: str = "strict") -> tuple[str, dict]:
    """A summary table of exactly what the scan asked for (and, with both labels present, AUROC /
    TPR@1%FPR / TPR@3%FPR per signal, metrics per prompt)."""
    cfg = result.config
    n_p, n_s = len(result.prompts), len(cfg.seeds)
    lines = [f"{n_p} prompts x {n_s} seeds (metrics per prompt, score averaged over its seeds, and AUROC per "
             f"generation; TPR convention: {convention})", ""]
    head = f"{'signal':<14} {'mean score':>11} {'UNet evals':>10} {'JVPs':>5} {'s/gen':>8}"
    labels = [p.label for p in result.prompts]
    labelled = all(lab is not None for lab in labels) and len(set(labels)) == 2
    if labelled:
        head += f" {'mean (mem)':>11} {'mean (ord)':>11} {'AUROC':>7} {'TPR@1%':>7} {'TPR@3%':>7} {'AUROC/gen':>9}"
    lines += [head, "-" * len(head)]
    metrics = {}
    for name in cfg.signals:
        rows = [r for r in result.rows(name) if r is not None]
        if not rows:
            continue
        line = (f"{name:<14} {np.nanmean([_num(r['score']) for r in rows]):11.4g} {rows[0]['n_evals']:10d} "
                f"{rows[0]['n_jvps']:5d} {np.mean([r['seconds'] for r in rows]):8.3f}")
        y, s, _ = prompt_scores(result, name)
        y = np.array(y, dtype=float)
        ok = np.isfinite(s)
        if labelled and ok.sum() and len(set(y[ok])) == 2:
            m = detection_metrics(y[ok].astype(int), s[ok], convention=convention)
            per_gen = result.scores(name)
            yg = np.repeat(y, per_gen.shape[1])
            okg = np.isfinite(per_gen.ravel())
            mg = detection_metrics(yg[okg].astype(int), per_gen.ravel()[okg], convention=convention)
            metrics[name] = {**m, "labels": y[ok].astype(int), "scores": s[ok], "per_generation": mg}
            line += (f" {s[ok & (y == 1)].mean():11.4g} {s[ok & (y == 0)].mean():11.4g} {m['auroc']:7.3f} "
                     f"{m['tpr@1%fpr']:7.3f} {m['tpr@3%fpr']:7.3f} {mg['auroc']:9.3f}")
        if len(rows) < n_p * n_s or not ok.all():
            line += f"  ({n_p * n_s - len(rows)} rows missing, {int((~ok).sum())} prompts undefined)"
        lines.append(line)
    if labelled and min(labels.count(0), labels.count(1)) >= 2:
        from ..detect.confound import caption_baseline

        base = caption_baseline([p.text for p in result.prompts], labels)
        metrics_note = (f"caption-only baseline (character 2-4-gram TF-IDF + logistic regression, {base['folds']}-fold "
                        f"cross-validated, no model): AUROC {base['auroc']:.3f} per prompt")
        lines += ["", metrics_note]
        if base["auroc"] >= 0.9:
            lines.append("  the prompt sets can be told apart by their text alone: a signal's AUROC on them does not "
                         "show that it measures memorization")
    return "\n".join(lines), metrics


def _num(v) -> float:
    return np.nan if v is None else float(v)
