"""The registry of mitigation methods: a method is its run function, its settings class and one registry line; the
command line's flags, the docs' table and the trade-off's sweep read it."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from memgeo._util import Settings, option, settings_table
from memgeo.mitigate import METHODS, MethodSpec, generate
from memgeo.mitigate.methods import Generation
from memgeo.mitigate.presets import SETTINGS, BasinSettings, SteerSettings
from memgeo.sampling import ddim_sample

DOCS = Path(__file__).resolve().parents[2] / "docs" / "command-line.md"


@pytest.fixture
def tiny_mixture():
    from memgeo.gmm import ConditionalGaussianMixture
    from memgeo.sampling import initial_noise

    mix = ConditionalGaussianMixture.memorization_scenario(dim=4, n_memorized=2, n_generalizing=2, seed=0)
    return mix, initial_noise(mix, 3)


def method_settings():
    return {m.name: m.settings_type for m in METHODS.values() if m.settings_type is not None}


def test_the_docs_table_of_method_options_is_generated_from_the_fields():
    text = DOCS.read_text()
    table = re.search(r"<!-- mitigation settings table: generated -->\n(.*?)\n<!-- end of the mitigation settings table -->",
                      text, re.S)
    want = settings_table(method_settings(), kind="method")
    assert table and table.group(1) == want, "regenerate docs/command-line.md's mitigation settings table"


def test_settings_given_to_generate_are_the_methods_and_act(tiny_mixture):
    mix, x_T = tiny_mixture
    plain = generate(mix, 0, x_T, method="basin", n_steps=8)
    same = generate(mix, 0, x_T, method="basin", n_steps=8, settings=BasinSettings())
    other = generate(mix, 0, x_T, method="basin", n_steps=8, settings=BasinSettings(inside=7.5))
    assert torch.equal(plain.samples, same.samples)
    assert other.info["inside"] == 7.5 and not torch.equal(plain.samples, other.samples)
    with pytest.raises(ValueError, match="settings of method 'basin' must be a BasinSettings, got SteerSettings"):
        generate(mix, 0, x_T, method="basin", n_steps=8, settings=SteerSettings())


def test_generate_flags_set_the_chosen_methods_settings_and_refuse_another_methods():
    from memgeo.cli import build_parser
    from memgeo.cli.generate import method_settings as from_flags

    parse = build_parser().parse_args
    args = parse(["generate", "--prompt", "a", "--mitigate", "basin", "--basin-inside", "-3", "--preset", "official"])
    assert from_flags(args) == BasinSettings.official().given(inside=-3.0)
    assert from_flags(parse(["generate", "--prompt", "a", "--mitigate", "basin"])) is None
    args = parse(["generate", "--prompt", "a", "--mitigate", "steer", "--embedding-lr", "0.1"])
    with pytest.raises(ValueError, match="--embedding-lr is an option of --mitigate embedding, not of --mitigate steer"):
        from_flags(args)
    args = parse(["generate", "--prompt", "a", "--mitigate", "embedding", "--embedding-freeze-start-token", "yes"])
    assert from_flags(args).freeze_start_token is True
    args = parse(["generate", "--prompt", "a", "--mitigate", "noise", "--noise-penalty", "auto"])
    assert from_flags(args).penalty == "auto"


@dataclasses.dataclass(frozen=True)
class ToyMitigationSettings(Settings):
    """A toy method's settings, as a new method would bring them."""

    factor: float = option(0.5, "the guidance scale is multiplied by this", type=float)
    OFFICIAL = {"factor": 0.25}


def toy_run(model, cond, x_T, req):
    """A toy mitigation: the guidance scale times the settings' factor (``strength`` replaces the factor)."""
    s = ToyMitigationSettings.resolve(req.settings, req.preset)
    w = req.guidance_scale * (s.factor if req.strength is None else req.strength)
    res = ddim_sample(model, cond, x_T, n_steps=req.n_steps, guidance_scale=w)
    return Generation(res.denoised, res.n_evals, {"guidance_scale": w})


def test_a_new_mitigation_is_its_run_function_its_settings_and_one_registry_line(monkeypatch, tiny_mixture):
    from memgeo.cli import build_parser
    from memgeo.cli.generate import method_settings as from_flags

    monkeypatch.setitem(SETTINGS, "toy", ToyMitigationSettings)  # undone after the test, as the registry line is
    monkeypatch.setitem(METHODS, "toy", MethodSpec("toy", toy_run, "a test", "the factor", "toy",
                                                   settings_class=ToyMitigationSettings,
                                                   tradeoff=(("toy", "memgeo", (0.5, 0.25)),)))
    mix, x_T = tiny_mixture
    g = generate(mix, 0, x_T, method="toy", n_steps=6, preset="official")  # the library
    assert g.info["guidance_scale"] == pytest.approx(7.5 * 0.25)
    assert torch.equal(g.samples, ddim_sample(mix, 0, x_T, n_steps=6, guidance_scale=7.5 * 0.25).denoised)
    args = build_parser().parse_args(["generate", "--prompt", "a", "--mitigate", "toy", "--toy-factor", "0.1"])
    assert from_flags(args) == ToyMitigationSettings(factor=0.1)  # the command line
    table = settings_table(method_settings(), kind="method")
    assert "| `toy` | `factor` | `--toy-factor` | 0.5 | 0.25 |" in table  # the docs' table
    from memgeo.experiments.tradeoff import tradeoff_configs

    assert ("toy", "toy", "memgeo", (0.5, 0.25)) in tradeoff_configs()  # the trade-off's default sweep


def test_the_noise_methods_iterations_come_from_its_settings_where_given(tiny_mixture):
    from memgeo.mitigate.presets import OptimizeNoiseSettings

    mix, x_T = tiny_mixture
    plain = generate(mix, 0, x_T, method="noise", n_steps=6)  # memgeo preset, no strength: 10 iterations
    mine = generate(mix, 0, x_T, method="noise", n_steps=6, settings=OptimizeNoiseSettings(max_iters=0))
    assert torch.equal(mine.samples, generate(mix, 0, x_T, method="none", n_steps=6).samples)  # x_T kept
    assert not torch.equal(plain.samples, mine.samples)
