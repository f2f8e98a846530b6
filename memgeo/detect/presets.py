"""Settings of every published detection signal, as data: the paper's released code (``"official"``) and memgeo's default.

The tables are read from the typed settings (:mod:`memgeo.detect.settings`, one frozen dataclass per signal, its
field defaults memgeo's and ``OFFICIAL`` the released code's differences). A signal reads its options once, from a
settings object or the preset's (``Settings.resolve``), an option the caller gives explicitly winning and one left as
``None`` coming from the preset; :func:`resolve` gives the same as a dict. Why memgeo differs, parameter by parameter:
docs/conventions.md, section 4.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._util import PRESET_NAMES, resolve_preset
from .settings import (
    AnisotropySettings,
    BrightEndingSettings,
    FlipdSettings,
    GuidanceNormSettings,
    KappaDeltaSettings,
    PLaplaceSettings,
    RegionalSharpnessSettings,
    SharpnessSettings,
    UpdateNormSettings,
)

__all__ = ["PRESETS", "PRESET_NAMES", "SETTINGS", "resolve"]

#: Each signal's settings class, by the signal's name.
SETTINGS = {
    "guidance_norm": GuidanceNormSettings,
    "anisotropy": AnisotropySettings,
    "sharpness": SharpnessSettings,
    "p_laplace": PLaplaceSettings,
    "kappa_delta": KappaDeltaSettings,
    "flipd": FlipdSettings,
    "bright_ending": BrightEndingSettings,
    "regional_sharpness": RegionalSharpnessSettings,
    "update_norm": UpdateNormSettings,
}

class _PresetTable(Mapping):
    """``{signal: {"memgeo": options, "official": options}}``, read from :data:`SETTINGS` when asked (so a signal
    registered later, with its settings class, has its presets too)."""

    def __getitem__(self, name: str) -> dict:
        cls = SETTINGS[name]
        return {p: cls.preset(p).as_options() for p in PRESET_NAMES}

    def __iter__(self):
        return iter(SETTINGS)

    def __len__(self) -> int:
        return len(SETTINGS)


#: Every signal's presets, read from :data:`SETTINGS`.
PRESETS: Mapping[str, dict[str, dict]] = _PresetTable()


def resolve(name: str, preset: str, **given) -> dict:
    """The options of the signal ``name`` under ``preset``, overridden by every ``given`` value that is not None."""
    return resolve_preset(PRESETS, name, preset, **given)
