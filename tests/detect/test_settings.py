"""Typed settings: every signal's options are the fields of one frozen dataclass; the presets, the command line's
flags, the docs' table and a new signal are all read from the fields."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from memgeo.detect import PRESETS, SIGNALS
from memgeo.detect.presets import SETTINGS
from memgeo.detect.settings import Settings, option, settings_table

DOCS = Path(__file__).resolve().parents[2] / "docs" / "command-line.md"

#: What the released code of each paper sets where memgeo differs (docs/conventions.md, section 4).
RELEASED = {
    "guidance_norm": {"steps": "all", "space": "prediction"},
    "anisotropy": {"norm": "released", "space": "prediction"},
    "p_laplace": {"field": "eps", "n_directions": 128, "t_probe": 10, "center": "scaled", "value": "mean_cosine",
                  "probe": "generated"},
    "kappa_delta": {"n_directions": 16, "geometry": "official", "step": 500},
    "flipd": {"method": "exact_up_to_3500", "probe": "generated"},
}


def test_official_settings_differ_from_memgeo_exactly_where_the_released_code_does():
    for name, cls in SETTINGS.items():
        memgeo, official = cls().as_options(), cls.official().as_options()
        differ = {k: v for k, v in official.items() if memgeo[k] != v}
        assert differ == RELEASED.get(name, {}), name
        assert PRESETS[name] == {"memgeo": memgeo, "official": official}
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cls(), "x", 1)


def test_given_options_override_and_unknown_ones_are_named():
    s = SETTINGS["flipd"]().given(t=21, method=None)
    assert s.t == 21 and s.method == "hutchinson_fd"
    with pytest.raises(ValueError, match=r"has no option \['tt'\]"):
        SETTINGS["flipd"]().given(tt=3)
    with pytest.raises(ValueError, match="preset must be one of"):
        SETTINGS["flipd"].preset("paper")


def test_a_settings_object_is_the_same_as_its_options(tiny_mixture):
    mix, x_T = tiny_mixture
    for name in ("guidance_norm", "anisotropy", "update_norm"):
        spec = SIGNALS[name]
        a = spec(mix, 0, x_T, settings=spec.settings.official(), n_steps=6)
        b = spec(mix, 0, x_T, preset="official", n_steps=6)
        torch.testing.assert_close(a.score, b.score)
    with pytest.raises(ValueError, match="must be a UpdateNormSettings"):
        SIGNALS["update_norm"](mix, 0, x_T, settings=SETTINGS["flipd"]())


@pytest.fixture
def tiny_mixture():
    from memgeo.gmm import ConditionalGaussianMixture
    from memgeo.sampling import initial_noise

    mix = ConditionalGaussianMixture.memorization_scenario(dim=4, n_memorized=2, n_generalizing=2, seed=0)
    return mix, initial_noise(mix, 3)


def test_the_docs_table_is_generated_from_the_fields():
    text = DOCS.read_text()
    table = re.search(r"<!-- settings table: generated -->\n(.*?)\n<!-- end of the settings table -->", text, re.S)
    assert table and table.group(1) == settings_table(SETTINGS), "regenerate docs/command-line.md's settings table"


@dataclasses.dataclass(frozen=True)
class ToySettings(Settings):
    """A toy signal's settings, as a new signal would bring them."""

    scale: float = option(2.0, "what the gap norm is multiplied by", type=float)
    OFFICIAL = {"scale": 3.0}


def toy(model, cond, x_T, settings=None, *, preset="memgeo", n_steps=50, **options):
    """A toy signal: the first-step gap norm times its settings' ``scale``."""
    from memgeo.detect import guidance_norm

    s = ToySettings.resolve(settings, preset, **options)
    r = guidance_norm(model, cond, x_T, n_steps=n_steps)
    return dataclasses.replace(r, name="toy", score=s.scale * r.score, value=s.scale * r.value)


def test_a_new_signal_is_its_module_its_settings_and_one_registry_line(monkeypatch, tmp_path, tiny_mixture):
    from memgeo.cli import build_parser
    from memgeo.cli.scan import signal_options
    from memgeo.detect import SignalSpec
    from memgeo.experiments.leaderboard import evaluate_signals
    from memgeo.scan import PromptRecord
    from memgeo.scan.run import ScanConfig, run_scan

    monkeypatch.setitem(SETTINGS, "toy", ToySettings)  # undone after the test, as the registry line is
    monkeypatch.setitem(SIGNALS, "toy", SignalSpec("toy", toy, "a test", batched=True, settings_class=ToySettings))
    assert PRESETS["toy"] == {"memgeo": {"scale": 2.0}, "official": {"scale": 3.0}}
    args = build_parser().parse_args(["scan", "--prompts", "p.txt", "--out", "o.jsonl", "--toy-scale", "5"])
    assert signal_options(args) == {"toy": {"scale": 5.0}}  # the command line
    assert "| `toy` | `scale` | `--toy-scale` | 2.0 | 3.0 |" in settings_table(SETTINGS)  # the docs' table
    from memgeo.testbed import load_testbed

    model = load_testbed()
    cfg = ScanConfig(signals=("guidance_norm", "toy"), seeds=(0, 1), n_steps=6, options={"toy": {"scale": 5.0}})
    records = [PromptRecord("thin seven, thick two, regular one, thin zero", 1, "p", 0),
               PromptRecord("thick one, thin one, regular nine, thin four", 0, "p", 1)]
    result = run_scan(model, records, tmp_path / "s.jsonl", cfg)  # the scan
    assert result.scores("toy") == pytest.approx(5 * result.scores("guidance_norm"))
    mix, x_T = tiny_mixture
    rows = evaluate_signals(mix, [0, 2], [1, 0], signals=("guidance_norm", "toy"), seeds=2, n_steps=6,
                            timing_repeats=1)  # the leaderboard
    assert [r.signal for r in rows] == ["guidance_norm", "toy"]
    assert np_close(rows[1].scores, 2 * rows[0].scores)


def np_close(a, b):
    import numpy as np

    return np.allclose(np.asarray(a), np.asarray(b))
