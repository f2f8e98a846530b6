"""Typed settings of the mitigations: memgeo's defaults are the fields, and the official preset differs exactly
where the released code does."""

import dataclasses

import pytest

from memgeo.mitigate.presets import PRESETS, SETTINGS, resolve

RELEASED = {
    "adapt_embedding": {"optimizer": "adamw", "max_iters": 10, "target": 3.0, "relative_target": None,
                        "loss": "frobenius", "freeze_start_token": True},
    "steer": {"low_guidance": 0.0, "act_from": 0.0},
    "basin": {"inside": 1.0, "force_at": None},
    "optimize_noise": {"objective": "sail", "max_iters": 10, "threshold": 8.2, "penalty": "auto"},
}


def test_official_settings_differ_from_memgeo_exactly_where_the_released_code_does():
    assert set(SETTINGS) == set(RELEASED)
    for name, cls in SETTINGS.items():
        memgeo, official = cls().as_options(), cls.official().as_options()
        assert {k: v for k, v in official.items() if memgeo[k] != v} == RELEASED[name], name
        assert PRESETS[name] == {"memgeo": memgeo, "official": official}
        with pytest.raises(dataclasses.FrozenInstanceError):
            cls().lr = 1.0 if hasattr(cls(), "lr") else setattr(cls(), "inside", 0.0)


def test_resolve_reads_the_settings_and_given_values_win():
    assert resolve("basin", "official", inside=-7.5) == {"inside": -7.5, "force_at": None}
    assert resolve("steer", "memgeo")["act_from"] == 0.9
    assert resolve("steer", "memgeo", low_guidance=0.0)["low_guidance"] == 0.0
    with pytest.raises(ValueError, match="preset must be one of"):
        resolve("steer", "paper")
