"""Thresholds that transfer: a stopping level read off unlabelled reference prompts of the model at hand acts on the
testbed, where the official absolute target (set on SD v1) stops at once."""

import pytest
import torch

from memgeo.guidance import first_timestep, guidance_pair, sample_norm
from memgeo.mitigate import adapt_embedding, generate, reference_level
from memgeo.sampling import initial_noise


@pytest.fixture(scope="module")
def testbed():
    from memgeo.testbed import load_testbed, testbed_metadata

    model = load_testbed()
    meta = testbed_metadata()
    memorized = max((p for p in meta["prompts"] if p.get("target_rate") is not None), key=lambda p: p["target_rate"])
    ordinary = [p["text"] for p in meta["prompts"] if p["kind"] == "ordinary"][:6]
    return model, memorized["text"], ordinary


def test_the_reference_level_is_the_median_of_the_prompts_mean_gap_norms(testbed):
    model, _, ordinary = testbed
    x_T = initial_noise(model, [1000, 1001])
    t = first_timestep(model, 50)
    with torch.no_grad():
        means = torch.stack([sample_norm(torch.sub(*guidance_pair(model, x_T, t, p)[::-1])).mean() for p in ordinary])
    assert reference_level(model, ordinary, x_T) == pytest.approx(float(torch.quantile(means.double(), 0.5)), rel=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        reference_level(model, [], x_T)
    with pytest.raises(ValueError, match="objective must be one of"):
        reference_level(model, ordinary, x_T, "flux")


def test_a_calibrated_target_acts_where_the_official_absolute_one_stops_at_once(testbed):
    model, prompt, ordinary = testbed
    x_T = initial_noise(model, [1000, 1001])
    official = adapt_embedding(model, prompt, x_T, preset="official")
    assert official.converged and len(official.losses) == 1  # the SD v1 target is above this model's gap norms
    level = reference_level(model, ordinary, x_T, n_steps=10)  # at the generation's own first timestep
    assert official.losses[0] > reference_level(model, ordinary, x_T)  # the memorized prompt sits above the ordinary prompts' level
    g = generate(model, prompt, x_T, method="embedding", n_steps=10, reference_prompts=ordinary)
    losses = g.info["losses"]
    assert len(losses) > 1 and losses[-1] < losses[0]
    assert g.info["converged"] == (losses[-1] <= level)
