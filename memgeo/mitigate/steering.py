"""Mid-generation steering (Brokman et al., NeurReps 2025): a sampler policy on the guidance gap's direction and magnitude."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_int
from .presets import SteerSettings
from ..guidance import combined_score
from ..sampling import StepState, ddim_sample, trajectory_trackers

__all__ = ["SteeringReference", "calibrate_steering", "SteeringPolicy"]


@dataclass
class SteeringReference:
    """Per-step mean and standard deviation of kappa-delta and the guidance norm on ordinary conditions."""

    kappa_mean: torch.Tensor
    kappa_std: torch.Tensor
    norm_mean: torch.Tensor
    norm_std: torch.Tensor

    def criterion(self, step: int, kappa: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """Combined z-score ``z(-kappa) + z(norm)`` at ``step`` (larger = more memorization-like):
        :func:`~memgeo.guidance.combined_score` against this reference's statistics."""
        return combined_score(kappa, norm, reference=((self.kappa_mean[step], self.kappa_std[step]),
                                                      (self.norm_mean[step], self.norm_std[step])))


def calibrate_steering(model, conds, x_T, *, n_steps: int = 50, guidance_scale: float = 7.5,
                       n_directions: int = 4, seed: int = 0, progress: bool = False) -> SteeringReference:
    """Reference statistics per step from ordinary conditions (trajectories with trackers)."""
    from tqdm.auto import tqdm

    if len(conds) == 0:
        raise ValueError("conds must hold at least one ordinary condition to calibrate on (it is empty)")
    ks, ns = [], []
    for i, c in enumerate(tqdm(list(conds), desc="calibrate steering", disable=not progress)):
        res = ddim_sample(model, c, x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                          trackers=trajectory_trackers(n_directions, generator=torch.Generator().manual_seed(seed + i)))
        ks.append(res.trace["kappa_delta"])
        ns.append(res.trace["guidance_norm"])
    k, n = torch.cat(ks, 1), torch.cat(ns, 1)  # [n_steps, N]
    return SteeringReference(k.mean(1), k.std(1), n.mean(1), n.std(1))


class SteeringPolicy:
    """Mid-generation steering (Brokman et al., NeurReps 2025), a policy for :func:`~memgeo.sampling.ddim_sample`.

    Needs the trackers ``"kappa_delta"`` and ``"guidance_norm"`` in the sampler. From step
    ``start_step`` on, a sample whose combined criterion (:meth:`SteeringReference.criterion`),
    averaged over the steps so far (one test on accumulating evidence rather than one per step),
    exceeds ``threshold`` is flagged; from step ``act_from`` on (or its flag, if later) and before step
    ``act_until`` (None: to the end) it is generated with ``low_guidance`` (action ``"guidance"``; a negative value
    repels from the prompt's conditional prediction) or with the adapted ``embedding`` (action ``"embedding"``,
    the whole batch switches once any sample is flagged), and as the prompt alone would be (its guidance and
    embedding) again from ``act_until`` on. Samples never flagged are left untouched.
    ``flags`` (a bool per sample, or one for all) replaces the detection by given flags: the action
    alone, as with a perfect detector; no reference or trackers are needed then.
    """

    def __init__(self, reference: SteeringReference | None, *, threshold: float = 3.0, action: str = "guidance",
                 low_guidance: float = 0.0, embedding=None, start_step: int = 0, act_from: int = 0,
                 act_until: int | None = None, flags: torch.Tensor | None = None):
        if action not in ("guidance", "embedding"):
            raise ValueError(f"action must be 'guidance' or 'embedding', got {action!r}")
        if action == "embedding" and embedding is None:
            raise ValueError("action='embedding' needs embedding= (an adapted embedding)")
        self.reference, self.threshold, self.action = reference, threshold, action
        self.low_guidance, self.embedding, self.start_step = low_guidance, embedding, start_step
        self.act_from = check_int("act_from", act_from, minimum=0)
        self.act_until = None if act_until is None else check_int("act_until", act_until, minimum=self.act_from + 1)
        if reference is None and flags is None:
            raise ValueError("SteeringPolicy needs reference= (to flag samples) or flags= (the flags given)")
        self.flags = None if flags is None else torch.as_tensor(flags, dtype=torch.bool)
        self.flagged: torch.Tensor | None = None
        self.flag_step: torch.Tensor | None = None
        self.n_directions = 4

    @classmethod
    def from_preset(cls, reference: SteeringReference | None, preset: str, n_steps: int, *,
                    settings: SteerSettings | None = None, threshold: float | None = None,
                    flags: torch.Tensor | None = None) -> "SteeringPolicy":
        """The ``steer`` preset's (or ``settings``') action for an ``n_steps`` run: its threshold (or ``threshold``),
        its ``low_guidance``, and its ``act_from`` and ``act_until`` (fractions of the steps; an ``act_until`` of 1
        acts to the end) as step indices; ``n_directions`` (the
        kappa-delta tracker's directions a generation steered by it takes) is kept on the policy."""
        s = SteerSettings.resolve(settings, preset, threshold=threshold)
        if not 0.0 <= float(s.act_from) < float(s.act_until) <= 1.0:
            raise ValueError(f"steer settings: act_from and act_until are fractions of the steps with 0 <= act_from < "
                             f"act_until <= 1 (1: to the end), got {s.act_from} and {s.act_until}")
        act_from = int(round(float(s.act_from) * n_steps))
        act_until = None if float(s.act_until) >= 1.0 else max(int(round(float(s.act_until) * n_steps)), act_from + 1)
        policy = cls(reference, threshold=float(s.threshold), low_guidance=float(s.low_guidance),
                     act_from=act_from, act_until=act_until, flags=flags)
        policy.n_directions = check_int("n_directions", s.n_directions, minimum=1)
        return policy

    def __call__(self, state: StepState, trace: dict):
        S = state.x.shape[0]
        if self.flags is not None:  # the flags given (a perfect detector): act on them only
            self.flagged = self.flags.expand(S).clone()
            self.flag_step = torch.where(self.flagged, 0, -1)
            return self._act(state)
        if "kappa_delta" not in trace or "guidance_norm" not in trace:
            raise ValueError("SteeringPolicy needs the sampler trackers 'kappa_delta' and 'guidance_norm'")
        if self.flagged is None or state.index == 0:
            self.flagged = torch.zeros(S, dtype=torch.bool)
            self.flag_step = torch.full((S,), -1)
            self._sum, self._count = torch.zeros(S, dtype=torch.float64), 0
        if state.index >= self.start_step:
            crit = self.reference.criterion(state.index, trace["kappa_delta"][-1], trace["guidance_norm"][-1])
            self._sum += crit.double().cpu()
            self._count += 1
            new = (self._sum / self._count > self.threshold) & ~self.flagged
            self.flag_step[new] = state.index
            self.flagged |= new
        return self._act(state)

    def _act(self, state: StepState):
        """The action on the flagged samples from step ``act_from`` to before ``act_until``."""
        if not bool(self.flagged.any()) or state.index < self.act_from:
            return None
        if self.act_until is not None and state.index >= self.act_until:
            return None
        if self.action == "embedding":
            return {"cond": self.embedding}
        w = torch.where(self.flagged, torch.tensor(self.low_guidance), torch.tensor(float(state.guidance_scale)))
        return {"guidance_scale": w}
