"""DiffusersScoreModel through the real from_pretrained path, on tiny offline pipelines."""

import math

import pytest
import torch

from memgeo.geometry import vjp
from memgeo.guidance import jvp
from memgeo.models import DiffusersScoreModel
from memgeo.models.tiny import float32_default
from memgeo.sampling import ddim_sample, initial_noise

PROMPT = "a painting of a lighthouse at dusk"


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def loaded(request, tiny_pipelines):
    return request.param, DiffusersScoreModel.from_pretrained(tiny_pipelines[request.param])


def test_loads_both_layouts_with_their_prediction_type(loaded):
    kind, model = loaded
    assert model.prediction_type == kind and model.event_shape == (4, 8, 8)
    assert model.timesteps(50)[0] == 981 and model.timesteps(50)[-1] == 1


def test_eps_converts_the_raw_unet_output(loaded):
    """eps from the adapter equals diffusers' own recovery of eps from the raw UNet output."""
    kind, model = loaded
    x = initial_noise(model, [0, 1])
    t = 501
    emb = model.embed(PROMPT, 2)
    with torch.no_grad(), float32_default():  # raw diffusers calls need torch's default dtype float32
        raw = model.unet(x, t, encoder_hidden_states=emb).sample.double()
    abar = float(model.alpha(t)) ** 2
    ref = raw if kind == "epsilon" else abar**0.5 * raw + (1 - abar) ** 0.5 * x.double()  # DDIMScheduler.step's formula
    with torch.no_grad():
        torch.testing.assert_close(model.eps(x, t, PROMPT).double(), ref, rtol=1e-5, atol=1e-5)


def test_pair_is_one_batched_call_equal_to_separate_calls(loaded):
    _, model = loaded
    x = initial_noise(model, [3, 4, 5])
    before = model.n_unet_rows
    with torch.no_grad():
        eu, ec = model.eps_pair(x, 981, PROMPT)
        assert model.n_unet_rows - before == 6
        torch.testing.assert_close(eu, model.eps(x, 981, None), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ec, model.eps(x, 981, [PROMPT] * 3), rtol=1e-5, atol=1e-5)
        per_row = model.eps(x, 981, [PROMPT, "", PROMPT])
    torch.testing.assert_close(per_row[1], eu[1], rtol=1e-5, atol=1e-5)


def test_jvp_and_vjp_through_the_unet(loaded):
    """Forward-mode AD through diffusers attention (math kernel) agrees with central differences and the VJP."""
    _, model = loaded
    x = initial_noise(model, [7, 8])
    v = initial_noise(model, [9, 10])
    w = initial_noise(model, [11, 12])
    f = lambda z: model.score(z, 261, PROMPT)  # noqa: E731
    _, Jv = jvp(f, x, v)
    h = 1e-2
    with torch.no_grad():
        fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    rel = float((fd - Jv).norm() / Jv.norm())
    assert rel < 5e-3, rel  # float32 differences agree with JVPs to ~1e-3 at h = 1e-2
    _, JTw = vjp(f, x, w)
    lhs, rhs = float((w * Jv).sum()), float((JTw * v).sum())
    assert math.isclose(lhs, rhs, rel_tol=1e-3), (lhs, rhs)


def test_sampler_matches_diffusers_ddim_loop(loaded, tiny_pipelines):
    """memgeo's CFG DDIM equals a loop over diffusers' DDIMScheduler.step with the same UNet."""
    from diffusers import DDIMScheduler

    kind, model = loaded
    x = initial_noise(model, [21])
    ours = ddim_sample(model, PROMPT, x, n_steps=10, guidance_scale=5.0).x0
    sched = DDIMScheduler.from_pretrained(tiny_pipelines[kind], subfolder="scheduler")
    sched.set_timesteps(10)
    emb = torch.cat([model.embed(None, 1), model.embed(PROMPT, 1)])
    lat = x.clone()
    with torch.no_grad(), float32_default():
        for t in sched.timesteps:
            out = model.unet(torch.cat([lat, lat]), t, encoder_hidden_states=emb).sample
            u, c = out.chunk(2)
            lat = sched.step(u + 5.0 * (c - u), t, lat, eta=0.0).prev_sample
    torch.testing.assert_close(ours, lat, rtol=1e-4, atol=1e-4)


def test_half_precision_weights_with_float32_math(tiny_pipelines):
    ref = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])
    low = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"], weights_dtype=torch.bfloat16)
    assert low.unet_dtype == torch.bfloat16 and low.dtype == torch.float32
    x = initial_noise(ref, [0])
    with torch.no_grad():
        a, b = ref.eps(x, 500, PROMPT), low.eps(x, 500, PROMPT)
    assert b.dtype == torch.float32 and float((a - b).norm() / a.norm()) < 0.05  # bf16 keeps ~3 digits


def test_float64_math(tiny_pipelines):
    model = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"], dtype=torch.float64)
    x = initial_noise(model, [0])
    assert x.dtype == torch.float64
    with torch.no_grad():
        assert model.score(x, 41, PROMPT).dtype == torch.float64


def test_loading_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiffusersScoreModel.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no unet/"):
        DiffusersScoreModel.from_pretrained(tmp_path / "empty")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="nothing is downloaded unless allow_download=True and HF_HUB_OFFLINE is unset"):
        DiffusersScoreModel.from_pretrained("memgeo-test/not-a-model", allow_download=True)


def test_bad_inputs(tiny_pipelines):
    model = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])
    with pytest.raises(ValueError, match=r"x must have shape \[B, 4, 8, 8\]"):
        model.eps(torch.zeros(1, 4, 4, 4, dtype=torch.float32), 10)
    with pytest.raises(ValueError, match="x must have dtype"):
        model.eps(torch.zeros(1, 4, 8, 8, dtype=torch.float64), 10)
    with pytest.raises(ValueError, match="one prompt per row"):
        model.eps(torch.zeros(2, 4, 8, 8, dtype=torch.float32), 10, ["a", "b", "c"])
    with pytest.raises(ValueError, match="cond must be None, a prompt"):
        model.eps(torch.zeros(1, 4, 8, 8, dtype=torch.float32), 10, 3.5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_follow_the_scheduler_configs_spacing(spacing, tiny_pipelines, tmp_path):
    """A checkpoint's ``timestep_spacing`` gives the timesteps diffusers' own DDIMScheduler would use."""
    import json
    import shutil

    from diffusers import DDIMScheduler

    folder = tmp_path / spacing
    shutil.copytree(tiny_pipelines["epsilon"], folder)
    cfg_file = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["timestep_spacing"] = spacing
    cfg_file.write_text(json.dumps(cfg))
    model = DiffusersScoreModel.from_pretrained(folder)
    sched = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    for n in (1, 3, 7, 10, 50, 333):
        sched.set_timesteps(n)
        assert torch.equal(model.timesteps(n), sched.timesteps.long()), (spacing, n)
