"""Token attribution, localization maps and the cross-attention baseline, against independent oracles."""

import json

import pytest
import torch

from memgeo.explain import cross_attention_map, default_localization_step, localize, pixel_auroc, token_attribution
from memgeo.gmm import NoiseSchedule
from memgeo.guidance import guidance_pair
from memgeo.models import DiffusersScoreModel
from memgeo.models.attention import AttentionCapture
from memgeo.sampling import initial_noise


@pytest.fixture(scope="module")
def testbed():
    from memgeo.testbed import load_testbed

    return load_testbed()


@pytest.fixture(scope="module")
def tiny(tiny_pipelines):
    return DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])


def _first_step_norm(model, emb, x_T):
    t = int(model.timesteps(50)[0])
    eu, ec = guidance_pair(model, x_T, t, emb)
    return (ec - eu).flatten(1).norm(dim=1).mean()


def test_output_gradient_matches_finite_differences(tiny):
    """The gradient norm of a prompt-embedding row is the directional derivative along that row's gradient."""
    prompt = "a small red house"
    att = token_attribution(tiny, prompt, method="gradient", space="output", seeds=2)
    x_T = initial_noise(tiny, 2)
    emb = tiny.encode_ids(tiny.prompt_ids(prompt)[None])[0]
    with torch.enable_grad():
        e = emb.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_first_step_norm(tiny, e, x_T), e)
    h = 1e-2  # float32 weights: a step large enough for the difference to rise above rounding
    for i in range(len(att.tokens)):
        u = torch.zeros_like(emb)
        u[i + 1] = g[i + 1] / g[i + 1].norm()
        fd = (_first_step_norm(tiny, emb + h * u, x_T) - _first_step_norm(tiny, emb - h * u, x_T)) / (2 * h)
        assert float(fd) == pytest.approx(att.gradient[i], rel=1e-2)


def test_input_gradient_matches_finite_differences_through_the_encoder(tiny):
    prompt = "a small red house"
    att = token_attribution(tiny, prompt, method="gradient", space="input", seeds=2)
    x_T = initial_noise(tiny, 2)
    layer = tiny.text_encoder.get_input_embeddings()
    ids = tiny.prompt_ids(prompt)[None]
    base = layer(ids).detach()
    i = max(range(len(att.tokens)), key=lambda k: att.gradient[k])

    def value(delta):
        hook = layer.register_forward_hook(lambda m, inp, out: out + delta)
        try:
            emb = tiny.text_encoder(ids)[0][0]
        finally:
            hook.remove()
        return float(_first_step_norm(tiny, emb, x_T))

    gen = torch.Generator().manual_seed(0)
    u = torch.zeros_like(base)
    u[0, i + 1] = torch.randn(base.shape[-1], generator=gen)
    u = u / u.norm()
    h = 1e-2
    fd = (value(h * u) - value(-h * u)) / (2 * h)
    assert abs(fd) <= att.gradient[i] * (1 + 1e-2) + 1e-6  # |directional derivative| <= gradient norm (Cauchy-Schwarz)
    with torch.enable_grad():  # and the directional derivative along the gradient itself reaches it
        leaf = base.clone().requires_grad_(True)
        hook = layer.register_forward_hook(lambda m, inp, out: leaf)
        try:
            emb = tiny.text_encoder(ids)[0][0]
        finally:
            hook.remove()
        (g,) = torch.autograd.grad(_first_step_norm(tiny, emb, x_T), leaf)
    v = torch.zeros_like(base)
    v[0, i + 1] = g[0, i + 1] / g[0, i + 1].norm()
    fd = (value(h * v) - value(-h * v)) / (2 * h)
    assert fd == pytest.approx(att.gradient[i], rel=5e-2)


def test_leave_one_out_is_the_signal_of_the_prompt_without_the_token(testbed):
    prompt = "thin six, regular seven, thick eight, thick seven"
    att = token_attribution(testbed, prompt, method="leave_one_out", seeds=2, n_steps=10)
    assert att.tokens == ["thin", "six", ",", "regular", "seven", ",", "thick", "eight", ",", "thick", "seven"]
    x_T = initial_noise(testbed, 2)
    t = int(testbed.timesteps(10)[0])
    words = prompt.replace(",", " ,").split(" ")

    def signal(text):
        eu, ec = guidance_pair(testbed, x_T, t, text)
        return float((ec - eu).flatten(1).norm(dim=1).mean())

    full = signal(prompt)
    assert att.value == pytest.approx(full, rel=1e-5)
    for i in (0, 2, 10):
        shorter = " ".join(words[:i] + words[i + 1:]).replace(" ,", ",")
        assert att.leave_one_out[i] == pytest.approx(full - signal(shorter), rel=1e-4, abs=1e-6)


def test_attribution_rejects_bad_arguments(testbed):
    from memgeo.gmm import ConditionalGaussianMixture

    mix = ConditionalGaussianMixture.memorization_scenario(dim=4, n_memorized=1, n_generalizing=1, seed=0)
    with pytest.raises(ValueError, match="method"):
        token_attribution(testbed, "thin six", method="saliency")
    with pytest.raises(ValueError, match="space"):
        token_attribution(testbed, "thin six", space="middle")
    with pytest.raises(ValueError, match="tokenizer"):
        token_attribution(mix, "thin six")


class _PinnedRegion:
    """Analytic model: x0 ~ N(0, I) unconditionally; under the condition, the coordinates of ``region`` are
    pinned to ``m`` (a point mass) and the rest keep N(0, I). Its denoisers are exact."""

    def __init__(self, shape=(4, 6, 6)):
        self.event_shape = shape
        self.dtype = torch.float64
        self.name = "pinned-region"
        b = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.schedule = NoiseSchedule.from_betas(b)
        self.region = torch.zeros(shape, dtype=torch.bool)
        self.region[:, :3, :3] = True
        self.m = torch.linspace(-1, 1, self.region.sum().item(), dtype=torch.float64)

    def alpha(self, t):
        return self.schedule.alpha(t)

    def sigma(self, t):
        return self.schedule.sigma(t)

    def timesteps(self, n):
        from memgeo.gmm import ddim_timesteps

        return ddim_timesteps(n, 1000)

    def eps(self, x, t, cond=None):
        a, s = float(self.alpha(t)), float(self.sigma(t))
        x0 = a * x / (a * a + s * s)  # posterior mean under N(0, I)
        if cond is not None:
            x0 = x0.clone()
            x0[:, self.region] = self.m
        return (x - a * x0) / s


def test_localization_map_is_the_pinned_region_of_an_analytic_model():
    model = _PinnedRegion()
    loc = localize(model, "pinned", seeds=6, n_steps=20)
    inside = loc.latent_map[model.region]
    outside = loc.latent_map[~model.region]
    assert bool((inside > 20).all())  # the conditional variance collapses to zero inside the region
    assert torch.allclose(outside, torch.zeros_like(outside), atol=1e-9)  # identical fields and paths outside
    assert loc.map.shape == (48, 48)  # VAE layout, 8 pixels per latent position
    mask = model.region[0].repeat_interleave(8, 0).repeat_interleave(8, 1).int()
    assert pixel_auroc(loc.map, mask) > 0.95
    assert loc.step == default_localization_step(model, 20)
    snr = [float(model.alpha(int(t))) ** 2 / float(model.sigma(int(t))) ** 2 for t in model.timesteps(20)]
    assert snr[loc.step] >= 1 and (loc.step == 0 or snr[loc.step - 1] < 1)


def test_localize_rejects_bad_arguments():
    model = _PinnedRegion()
    with pytest.raises(ValueError, match="2 seeds"):
        localize(model, "pinned", seeds=1, n_steps=5)
    with pytest.raises(ValueError, match="step"):
        localize(model, "pinned", seeds=2, n_steps=5, step=5)
    with pytest.raises(ValueError, match="mask"):
        pixel_auroc(torch.zeros(4, 4), torch.zeros(4, 4))


def test_attention_capture_keeps_probabilities_and_leaves_the_output_unchanged(tiny, tiny_pipelines):
    x = initial_noise(tiny, 2)
    t = int(tiny.timesteps(10)[-1])
    plain = tiny.eps(x, t, "a small red house")
    store = {}
    saved = tiny.unet.attn_processors
    tiny.unet.set_attn_processor({name: AttentionCapture(store, name) for name in saved})
    try:
        captured = tiny.eps(x, t, "a small red house")
    finally:
        tiny.unet.set_attn_processor(saved)
    assert torch.allclose(plain, captured, atol=1e-6)
    assert store and all(torch.allclose(p.sum(-1), torch.ones_like(p.sum(-1)), atol=1e-5) for p in store.values())
    m = cross_attention_map(tiny, "a small red house", seeds=2, n_steps=4)
    vae = json.loads((tiny_pipelines["epsilon"] / "vae" / "config.json").read_text())
    f = 2 ** (len(vae["block_out_channels"]) - 1)  # the VAE's downsampling factor
    assert m.shape == (tiny.event_shape[1] * f, tiny.event_shape[2] * f)
    assert bool(torch.isfinite(m).all()) and float(m.min()) >= 0 and float(m.max()) <= 1
    loc = localize(tiny, "a small red house", seeds=2, n_steps=4)  # its guided run ends in the same state
    assert torch.equal(cross_attention_map(tiny, "a small red house", n_steps=4, x_last=loc.x_last), m)


@pytest.mark.parametrize("where", ["testbed", "tiny"])
def test_explain_and_localize_commands(tmp_path, tiny_pipelines, where, capsys):
    from memgeo.cli import main

    model = [] if where == "testbed" else ["--model", str(tiny_pipelines["epsilon"])]
    prompt = "thin six, regular seven, thick eight, thick seven"
    out = tmp_path / "out"
    assert main(["explain", "--prompt", prompt, "--out", str(out), "--seeds", "2", "--steps", "6", "--no-progress", *model]) == 0
    ex = json.loads((out / "explain.json").read_text())
    assert len(ex["tokens"]) == len(ex["scores"]) == len(ex["leave_one_out"]) and ex["prompt"] == prompt
    assert (out / "explain.png").stat().st_size > 1000
    assert main(["localize", "--prompt", prompt, "--out", str(out), "--seeds", "3", "--steps", "6", "--no-progress", *model]) == 0
    lo = json.loads((out / "localize.json").read_text())
    assert list(torch.tensor(lo["map"]).shape) == lo["shape"]
    assert lo["shape"] == ([16, 16] if where == "testbed" else [lo["shape"][0], lo["shape"][0]])
    assert (out / "localize.png").stat().st_size > 1000
    before = (out / "explain.json").read_text()
    capsys.readouterr()
    assert main(["explain", "--prompt", "thick one, thin two, thin three, thin four", "--out", str(out), "--seeds", "2",
                 "--steps", "6", "--no-progress", *model]) == 2
    assert "another --out" in capsys.readouterr().err
    assert (out / "explain.json").read_text() == before  # another prompt never overwrites a result
