"""The signal registry: one entry per published signal, saying what it needs and how it runs.

The scan, the leaderboards and the command line read these entries instead of keeping their own
lists: whether a signal generates a sample first (and so draws random directions, one (prompt,
seed) at a time), whether it takes the guidance scale, whether many prompts can go through the
model in one call, whether its probe time comes from the set of prompts scored, and how the
command line's ``--directions`` sets its directions.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .anisotropy import anisotropy
from .bright_ending import bright_ending
from .flipd import flipd_probe_time, flipd_signal
from .gap_turn import GapTurnSettings, gap_turn
from .guidance_norm import guidance_norm
from .kappa_delta import kappa_delta
from .p_laplace import p_laplace_flux
from .presets import PRESETS, SETTINGS
from .regional_sharpness import regional_sharpness
from .settings import flag_name
from .sharpness import sharpness
from .update_norm import update_norm

__all__ = ["SignalSpec", "SignalOption", "SIGNALS", "DEFAULT_SIGNALS", "COST_REFERENCE", "runnable_signals"]


@dataclass(frozen=True)
class SignalOption:
    """An option of one signal that a scan carries and the command line sets (beyond the shared ones).

    Attributes:
        name: the signal function's keyword.
        flag: the command line's flag (``memgeo scan``).
        help: what it sets.
        default: its value where none is given (None: the option is not passed, the preset decides).
        choices: the values it takes (None: any value ``type`` reads).
        type: converts a command-line string (None: kept as text).
        check: ``check(model, value)`` raises a ValueError naming ``flag`` where the value does not fit the model
            (a range that depends on it, such as its timesteps); called once the model's configuration is read,
            before any evaluation (None: nothing to check).
    """

    name: str
    flag: str
    help: str
    default: Any = None
    choices: tuple | None = None
    type: Callable | None = None
    check: Callable | None = None


@functools.lru_cache(maxsize=None)
def _takes_settings(fn) -> bool:
    """Whether a signal function takes its settings object as one argument (read once per function)."""
    return "settings" in inspect.signature(fn).parameters


@dataclass(frozen=True)
class SignalSpec:
    """A published signal and what it needs.

    Attributes:
        name: the signal's name (its key in :data:`SIGNALS` and in :data:`~memgeo.detect.PRESETS`).
        fn: ``fn(model, cond, x_T, **options) -> SignalResult``.
        source: the paper it implements.
        generates: it generates a sample (CFG DDIM) before measuring, and may draw random directions from
            ``generator``: one ``torch.Generator``, or a list of one per row (each row's draws its own, so a
            row's value is the same alone or in a batch).
        guided: it takes ``guidance_scale``.
        batched: several (prompt, seed) rows (a list ``cond``) go through the model in one call, equal to the
            rows computed one at a time (a generating signal takes one generator per row).
        directions: directions it takes per unit of the command line's ``--directions`` (None: no directions).
        cross_attention: it reads a UNet's cross-attention (not defined for a mixture or SD3's transformer).
        probe_time: ``probe_time(model, texts, *, preset, guidance_scale, n_steps, options) -> dict``: options fixed
            once from the prompts a scan scores (the scanned or reference prompts), before any row (None: none).
        default_scan: it is among the signals a scan computes when none are named.
        terms: the names of its result's ``extras`` that are its terms, each a detector alone, oriented as the
            combination (reported beside it by preset comparisons).
        settings_class: its settings class (:class:`~memgeo.detect.settings.Settings`), registered with it; the
            built-in signals' are in :data:`~memgeo.detect.presets.SETTINGS`.
        base: for a budget variant, the signal it is a cheaper reading of (its settings and presets are the base's).
        budget: the options a budget variant fixes (``(("track_steps", 3),)``: the first 3 steps); its cost is
            what the function then counts, never typed here.
        free: it reads what a generation computes anyway (the sampler's own updates): zero evaluations beyond a
            generation the user runs; ``n_evals`` counts what it costs when called alone.
        own: it is memgeo's own detector, not a published one (the cost-accuracy front marks it, and the
            leaderboard's targets compare it with the published signals).
    """

    name: str
    fn: Callable
    source: str
    generates: bool = False
    guided: bool = False
    batched: bool = False
    directions: int | None = None
    cross_attention: bool = False
    probe_time: Callable | None = None
    default_scan: bool = False
    terms: tuple[str, ...] = ()
    free: bool = False
    own: bool = False
    settings_class: type | None = None
    base: str | None = None
    budget: tuple[tuple[str, Any], ...] = ()

    def __call__(self, model, cond, x_T, settings=None, **options):
        """``fn(model, cond, x_T, **options)``; ``settings`` (an instance of the signal's settings class) gives every
        option at once, each option given beside it winning; a budget variant's own options win over both. A
        function that takes a settings object gets it as it is (its fields, not the preset's, where one is None)."""
        if settings is not None:
            if not isinstance(settings, self.settings):
                raise ValueError(f"settings of {self.name} must be a {self.settings.__name__}, got "
                                 f"{type(settings).__name__}")
            if _takes_settings(self.fn):
                return self.fn(model, cond, x_T, settings, **{**options, **dict(self.budget)})
            options = {**settings.as_options(), **options}
        return self.fn(model, cond, x_T, **{**options, **dict(self.budget)})

    def __post_init__(self):
        if self.base is not None:
            if self.base not in SETTINGS or not self.budget:
                raise ValueError(f"a budget variant needs a known base signal and the options it fixes, got "
                                 f"base={self.base!r}, budget={self.budget!r}")
        elif self.settings_class is not None:  # a signal brings its settings class with its registry line
            SETTINGS[self.name] = self.settings_class
        elif self.name not in SETTINGS:
            raise ValueError(f"signal {self.name!r} needs a settings class (settings_class=, memgeo.detect.settings)")

    @property
    def settings(self):
        """The signal's settings class (:mod:`memgeo.detect.settings`; a budget variant's base's)."""
        return SETTINGS[self.base or self.name]

    @property
    def extra(self) -> tuple[SignalOption, ...]:
        """Its options that a scan carries and the command line sets: every settings field a command may set, as
        ``--SIGNAL-OPTION``; left unset, the preset decides (a budget variant takes its base's flags)."""
        if self.base is not None:
            return ()
        return tuple(SignalOption(f.name, flag_name(self.name, f.name), f.metadata["help"], None, f.metadata["choices"],
                                  f.metadata["type"], f.metadata["check"])
                     for f in dataclasses.fields(self.settings) if f.metadata["flag"])

    @property
    def presets(self) -> dict:
        """The signal's preset table (``{"memgeo": {...}, "official": {...}}``)."""
        return PRESETS[self.name]

    def fixed_options(self, model, texts, *, preset: str = "memgeo", guidance_scale: float = 7.5, n_steps: int = 50,
                      options: dict | None = None) -> dict:
        """The options chosen once from the prompts scored (``texts``: the scanned ones, or unlabelled reference
        prompts) by the signal's :attr:`probe_time` hook, merged over ``options``: the one place where an "auto"
        setting is resolved, so that every row of a comparison is computed at one setting, which its settings
        digest then records. ``options`` as given for a signal with no such setting."""
        options = dict(options or {})
        if self.probe_time is None:
            return options
        return {**options, **self.probe_time(model, list(texts), preset=preset, guidance_scale=guidance_scale,
                                             n_steps=n_steps, options=options)}

    def options(self, *, n_steps: int, preset: str = "memgeo", guidance_scale: float | None = None,
                n_directions: int | None = None, generator: torch.Generator | None = None) -> dict:
        """The keyword arguments of one call: only those the signal takes, from what a caller offers."""
        kw: dict = {"n_steps": n_steps, "preset": preset}
        if self.guided and guidance_scale is not None:
            kw["guidance_scale"] = guidance_scale
        if self.directions is not None and n_directions is not None:
            kw["n_directions"] = self.directions * n_directions
        if self.generates and generator is not None:
            kw["generator"] = generator
        kw.update(self.budget)  # a budget variant's own reading
        return kw


SIGNALS: dict[str, SignalSpec] = {s.name: s for s in (
    SignalSpec("guidance_norm", guidance_norm, "Wen et al., ICLR 2024", guided=True, batched=True, default_scan=True),
    SignalSpec("anisotropy", anisotropy, "Asthana & Belagiannis, ICLR 2026", batched=True, default_scan=True,
               terms=("norm", "cos")),
    SignalSpec("sharpness", sharpness, "Jeon et al., ICML 2025", batched=True, default_scan=True),
    SignalSpec("p_laplace", p_laplace_flux, "Brokman et al., SSVM 2025", generates=True, guided=True, batched=True,
               directions=4),
    SignalSpec("kappa_delta", kappa_delta, "Brokman et al., NeurReps 2025", generates=True, guided=True, batched=True,
               directions=1),
    SignalSpec("flipd", flipd_signal, "Kamkari et al. 2024; Ross et al. 2025", generates=True, guided=True,
               batched=True, probe_time=flipd_probe_time),
    SignalSpec("bright_ending", bright_ending, "Chen et al., ICLR 2025", generates=True, guided=True,
               batched=True, cross_attention=True),  # no random draws: many (prompt, seed) rows in one generation
    SignalSpec("regional_sharpness", regional_sharpness, "memgeo (sharpness per region)", batched=True, own=True),
    SignalSpec("update_norm", update_norm, "Huang et al., KDD 2026", guided=True, batched=True, free=True),
    SignalSpec("gap_turn", gap_turn, "memgeo (the guidance gap's turn over the first step)", guided=True, batched=True,
               own=True, settings_class=GapTurnSettings),
    # budget variants: the published signals read at a smaller cost, each its base with the options it fixes
    *(SignalSpec(f"guidance_norm_k{k}", guidance_norm, "Wen et al., ICLR 2024 (first k steps)", guided=True,
                 batched=True, base="guidance_norm", budget=(("steps", "all"), ("track_steps", k))) for k in (3, 8)),
    *(SignalSpec(f"kappa_delta_k{k}", kappa_delta, "Brokman et al., NeurReps 2025 (first k steps)", generates=True,
                 guided=True, batched=True, directions=1, base="kappa_delta", budget=(("track_steps", k),))
      for k in (1, 3, 8)),
    SignalSpec("gap_turn_k3", gap_turn, "memgeo (the gap's turn over the first 3 steps)", guided=True, batched=True,
               own=True, base="gap_turn", budget=(("k", 3),)),
    SignalSpec("bright_ending_10", bright_ending, "Chen et al., ICLR 2025 (a 10-step generation)", generates=True,
               guided=True, batched=True, cross_attention=True, base="bright_ending", budget=(("n_steps", 10),)),
)}


#: The signals a scan computes when none are named.
DEFAULT_SIGNALS: tuple[str, ...] = tuple(name for name, spec in SIGNALS.items() if spec.default_scan)

#: The signal every other's cost is reported against (two evaluations per sample).
COST_REFERENCE = "guidance_norm"


def runnable_signals(model, names=None) -> tuple[str, ...]:
    """``names`` (default: every signal of :data:`SIGNALS`) less those ``model`` cannot run: the ones that read
    UNet cross-attention, where it has none (a mixture, SD3's transformer)."""
    from ..models.attention import has_cross_attention

    names = tuple(SIGNALS) if names is None else tuple(names)
    return tuple(n for n in names if not SIGNALS[n].cross_attention or has_cross_attention(model))
