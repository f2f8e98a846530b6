"""The official presets equal a direct re-implementation of each released code from raw diffusers outputs.

Every reference below is written from the raw pieces of a tiny pipeline (UNet, DDIMScheduler,
tokenizer, text encoder loaded with diffusers/transformers), the way the released code uses them,
without memgeo's adapter; memgeo's preset must give the same numbers on both prediction types.
"""

import math
import warnings

import pytest
import torch

from memgeo.detect import PRESETS, anisotropy, flipd_signal, guidance_norm, kappa_delta, p_laplace_flux
from memgeo.models import DiffusersScoreModel
from memgeo.models.tiny import float32_default
from memgeo.sampling import initial_noise

PROMPT = "a painting of a lighthouse at dusk"
TOL = dict(rtol=2e-4, atol=2e-5)  # float32 UNet outputs, summed over a few hundred coordinates


class Raw:
    """The tiny pipeline's parts, loaded as the released code loads them."""

    def __init__(self, folder):
        from diffusers import DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        with float32_default():
            self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
            self.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        self.scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
        self.abar = self.scheduler.alphas_cumprod.double()
        self.kind = self.scheduler.config.prediction_type

    @torch.no_grad()
    def embeds(self, prompt):
        ids = self.tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with float32_default():
            return self.text_encoder(ids)[0]

    @torch.no_grad()
    def out(self, x, t, prompt):
        """(raw_u, raw_c): the UNet's own outputs (eps or v) for the empty prompt and ``prompt``."""
        B = x.shape[0]
        emb = torch.cat([self.embeds("").expand(B, -1, -1), self.embeds(prompt).expand(B, -1, -1)])
        with float32_default():
            o = self.unet(torch.cat([x, x]).float(), t, encoder_hidden_states=emb).sample.double()
        return o[:B], o[B:]

    def eps(self, raw, x, t):
        a = float(self.abar[t])
        return raw if self.kind == "epsilon" else math.sqrt(a) * raw + math.sqrt(1 - a) * x

    def cfg_trajectory(self, x_T, prompt, n_steps=50, w=7.5):
        """diffusers' DDIM loop with CFG: the raw outputs at each step and the latents after each step."""
        self.scheduler.set_timesteps(n_steps)
        lat, raws, after = x_T.double(), [], []
        for t in self.scheduler.timesteps:
            u, c = self.out(lat, int(t), prompt)
            raws.append((u, c))
            lat = self.scheduler.step(u + w * (c - u), t, lat).prev_sample.double()
            after.append(lat)
        return raws, after


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def pair(request, tiny_pipelines):
    folder = tiny_pipelines[request.param]
    return Raw(folder), DiffusersScoreModel.from_pretrained(folder, dtype=torch.float64)


def sphere(n, like, seed):
    """The directions a generator seeded with ``seed`` gives: float64 normals normalized per row."""
    N = torch.randn((n, *like.shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return N / N.flatten(2).norm(dim=-1)[..., None, None, None]


def test_guidance_norm_official_is_the_mean_over_the_generation_of_the_raw_gap(pair):
    raw, model = pair
    x_T = initial_noise(model, [0, 1])
    raws, _ = raw.cfg_trajectory(x_T, PROMPT, n_steps=10)
    ref = torch.stack([(c - u).flatten(1).norm(dim=-1) for u, c in raws]).mean(0)
    got = guidance_norm(model, PROMPT, x_T, preset="official", n_steps=10)
    torch.testing.assert_close(got.value, ref, **TOL)
    assert got.n_evals == 20


def test_anisotropy_official_as_released(pair):
    raw, model = pair
    x_T = initial_noise(model, [2, 3])
    raw.scheduler.set_timesteps(50)
    t_hi, t_lo = int(raw.scheduler.timesteps[0]), int(raw.scheduler.timesteps[-3])
    u, c = raw.out(x_T, t_hi, PROMPT)
    ul, cl = raw.out(x_T, t_lo, PROMPT)
    if raw.kind == "epsilon":
        norm, weights = (c - u).flatten(1).norm(dim=-1), (1.0, 2.0)
    else:  # the released "score" of a v model: (sqrt(abar) v - x) / (1 - abar)
        b, bp = math.sqrt(raw.abar[t_hi]), math.sqrt(1 - raw.abar[t_hi])
        norm, weights = ((b * c - x_T) / bp**2 - (b * u - x_T) / bp**2).flatten(1).norm(dim=-1), (1.0, 0.1)
    cos = torch.nn.functional.cosine_similarity(ul, cl - ul, dim=1).flatten(1).mean(-1)
    got = anisotropy(model, PROMPT, x_T, preset="official")
    torch.testing.assert_close(got.extras["norm"], norm, **TOL)
    torch.testing.assert_close(got.extras["cos"], cos, **TOL)
    torch.testing.assert_close(got.value, weights[0] * norm + weights[1] * cos, **TOL)


def test_anisotropy_default_scales_the_norm_to_the_reference_latent_size(pair):
    raw, model = pair
    x_T = initial_noise(model, [4])
    official = anisotropy(model, PROMPT, x_T, preset="official", space="eps", norm="raw")
    default = anisotropy(model, PROMPT, x_T)
    d_ref = 4 * 64 * 64 if raw.kind == "epsilon" else 4 * 96 * 96
    torch.testing.assert_close(default.extras["norm"], official.extras["norm"] * math.sqrt(d_ref / (4 * 8 * 8)))
    torch.testing.assert_close(default.extras["cos"], official.extras["cos"])
    assert default.extras["weights"] == ((1.0, 2.0) if raw.kind == "epsilon" else (1.0, 0.1))


def test_p_laplace_official_as_released(pair):
    raw, model = pair
    x0 = 0.5 * initial_noise(model, [5, 6])  # a given sample, so no generation is needed
    got = p_laplace_flux(model, PROMPT, x0, preset="official", x0=x0, n_directions=12,
                         generator=torch.Generator().manual_seed(3))
    t = 10
    centre = math.sqrt(raw.abar[t]) * x0
    r = math.sqrt(1 - raw.abar[t]) * math.sqrt(x0[0].numel())
    N = sphere(12, x0, 3)
    cos = []
    for j in range(12):
        pts = centre + r * N[j]
        _, c = raw.out(pts, t, PROMPT)
        e = raw.eps(c, pts, t)
        cos.append(torch.nn.functional.cosine_similarity(e.flatten(1), N[j].flatten(1), dim=1))
    torch.testing.assert_close(got.value, torch.stack(cos).mean(0), **TOL)
    assert torch.equal(got.score, got.value) and got.extras["t"] == 10


def test_kappa_delta_official_probe_steps_are_the_released_callbacks(tiny_pipelines):
    """The released generate.py saves the latent in the pipeline's legacy callback when
    ``step < 2 or step % 50 == 0``, over 500 steps of SD v1.4's scheduler (PNDM, ``skip_prk_steps``)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    folder = tiny_pipelines["epsilon"]
    with float32_default():
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None,
                                                       requires_safety_checker=False)
    pipe.scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipe.set_progress_bar_config(disable=True)
    saved = []

    def callback(step, timestep, latents):
        if step < 2 or step % 50 == 0:
            saved.append(step)

    with warnings.catch_warnings(), float32_default():
        warnings.simplefilter("ignore")  # the legacy callback is deprecated, as it was when released
        pipe(PROMPT, num_inference_steps=500, callback=callback, callback_steps=1, output_type="latent",
             generator=torch.Generator().manual_seed(0))
    official = PRESETS["kappa_delta"]["official"]
    assert tuple(official["probe_steps"]) == tuple(saved) and official["released_steps"] == 500
    assert official["step"] in saved and official["step"] != 0 and official["n_directions"] == 16


def test_kappa_delta_official_as_released(pair):
    raw, model = pair
    x_T = initial_noise(model, [7])
    n_steps, n_dir = 6, 3
    got = kappa_delta(model, PROMPT, x_T, preset="official", n_steps=n_steps, n_directions=n_dir,
                      generator=torch.Generator().manual_seed(9))
    _, after = raw.cfg_trajectory(x_T, PROMPT, n_steps=n_steps)
    probes = [1, 50, 100, 150, 200, 250, 300, 350, 400, 450, 500]
    # released step i of 501 read at the same fraction of a 6-step run: after step round((i+1) 6/501) - 1
    read = [0, 0, 0, 1, 1, 2, 3, 3, 4, 4, 5]
    gen = torch.Generator().manual_seed(9)
    d = x_T[0].numel()
    ref = []
    for i, j in zip(probes, read):  # the step index i is passed as the timestep, as released
        N = torch.randn((n_dir, *after[j].shape), generator=gen, dtype=torch.float64)
        N = N / N.flatten(2).norm(dim=-1)[..., None, None, None]
        centre = math.sqrt(raw.abar[i]) * after[j]
        cos = []
        for k in range(n_dir):
            pts = centre + math.sqrt(1 - raw.abar[i]) * math.sqrt(d) * N[k]
            u, c = raw.out(pts, i, PROMPT)
            gap = raw.eps(c, pts, i) - raw.eps(u, pts, i)
            cos.append(torch.nn.functional.cosine_similarity(gap.flatten(1), N[k].flatten(1), dim=1))
        ref.append(torch.stack(cos).mean(0))
    torch.testing.assert_close(got.extras["trace"], torch.stack(ref), rtol=1e-3, atol=1e-4)
    assert got.extras["trace_t"] == probes and got.extras["trace_step"] == read
    torch.testing.assert_close(got.value, got.extras["trace"][-1])  # released step 500: the finished latent
    assert torch.equal(got.score, got.value)
    assert got.n_evals == 2 * n_steps + 2 * n_dir * len(probes)


def test_flipd_official_is_the_exact_trace_formula(pair):
    raw, model = pair
    x0 = 0.3 * initial_noise(model, [8])
    t = 101
    with warnings.catch_warnings():  # a random tiny UNet need not resolve t = 101: LID > d is warned about
        warnings.simplefilter("ignore", UserWarning)
        got = flipd_signal(model, PROMPT, x0, preset="official", x0=x0, t=t)
    a, s = math.sqrt(raw.abar[t]), math.sqrt(1 - raw.abar[t])
    emb_c = raw.embeds(PROMPT)

    def score(y):
        with float32_default():
            o = raw.unet(y.reshape(1, *x0.shape[1:]).float(), t, encoder_hidden_states=emb_c).sample.double()
        return (-raw.eps(o, y.reshape(1, *x0.shape[1:]), t) / s).reshape(-1)

    y = (a * x0).reshape(-1)
    J = torch.autograd.functional.jacobian(score, y)
    sc = score(y)
    ref = (y.numel() + s**2 * (torch.trace(J) + sc @ sc)).detach()
    assert got.value.item() == pytest.approx(float(ref), rel=2e-3)
    assert got.extras["t"] == t and got.n_jvps == y.numel()


def test_every_method_has_both_presets_and_rejects_others(pair):
    _, model = pair
    assert all(set(v) == {"memgeo", "official"} for v in PRESETS.values())
    with pytest.raises(ValueError, match="preset must be one of"):
        guidance_norm(model, PROMPT, initial_noise(model, [0]), preset="paper")
