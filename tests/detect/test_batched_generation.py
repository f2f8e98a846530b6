"""Generation signals run many (prompt, seed) rows in one batch, each row with its own seeded directions, and equal
their one-row-at-a-time values."""

import pytest
import torch

from memgeo.detect import SIGNALS
from memgeo.models import DiffusersScoreModel
from memgeo.sampling import initial_noise

PROMPTS = ["a painting of a lighthouse at dusk", "a blue cat", "a red house by the sea"]


@pytest.fixture(scope="module")
def tiny(tiny_pipelines):
    return DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])


def _generators():
    return [torch.Generator().manual_seed(100 + i) for i in range(len(PROMPTS))]


@pytest.mark.parametrize("name,preset", [("p_laplace", "memgeo"), ("p_laplace", "official"), ("kappa_delta", "memgeo"),
                                         ("kappa_delta", "official"), ("flipd", "memgeo"), ("bright_ending", "memgeo"),
                                         ("gap_turn", "memgeo")])
def test_batched_rows_equal_rows_alone(tiny, name, preset):
    x_T = initial_noise(tiny, [0, 1, 2])
    kw = {"n_steps": 4, "preset": preset}
    if name == "flipd":
        kw["t"] = int(tiny.timesteps(4)[2])
    draws = SIGNALS[name].generates  # a signal with random draws takes one generator per row
    together = SIGNALS[name](tiny, PROMPTS, x_T, **({"generator": _generators()} if draws else {}), **kw)
    alone = torch.cat([SIGNALS[name](tiny, p, x_T[i:i + 1], **({"generator": [g]} if draws else {}), **kw).score
                       for i, (p, g) in enumerate(zip(PROMPTS, _generators()))])
    torch.testing.assert_close(together.score, alone, rtol=1e-4, atol=1e-5)
    assert SIGNALS[name].batched


def test_one_generator_per_row_or_a_clear_error(tiny):
    x_T = initial_noise(tiny, [0, 1, 2])
    with pytest.raises(ValueError, match="one per row"):
        SIGNALS["p_laplace"](tiny, PROMPTS, x_T, n_steps=4, generator=_generators()[:2])
