"""SDXL, Stable Diffusion 3 and LoRA fine-tunes through the same score-model interface, on tiny offline pipelines
saved and loaded back through ``from_pretrained``. The interface checks compare with the family's own diffusers
pipeline (or its components called by hand); the command-line and audit tests check that each family runs end to end
and that the audit finds what it was given."""

import json

import pytest
import torch

from memgeo.detect import SIGNALS
from memgeo.guidance import raw_prediction
from memgeo.models import DiffusersScoreModel
from memgeo.models.tiny import build_tiny_lora, float32_default
from memgeo.parameterization import from_eps, to_eps, to_x0
from memgeo.sampling import ddim_sample, initial_noise

PROMPT = "a painting of a lighthouse at dusk"


@pytest.fixture(scope="module")
def family_pipelines(tmp_path_factory):
    from memgeo.models.tiny import build_tiny_sd3_pipeline, build_tiny_sdxl_pipeline

    root = tmp_path_factory.mktemp("families")
    return {
        "sdxl": build_tiny_sdxl_pipeline(root / "sdxl"),
        "sdxl-v": build_tiny_sdxl_pipeline(root / "sdxl-v", "v_prediction", force_zeros_for_empty_prompt=False),
        "sd3": build_tiny_sd3_pipeline(root / "sd3"),
    }


def _pipeline(folder):
    import diffusers

    index = json.loads((folder / "model_index.json").read_text())
    cls = getattr(diffusers, index["_class_name"])
    absent = {k: None for k, v in index.items() if isinstance(v, list) and v[0] is None}  # the tiny SD3 has no T5
    with float32_default():
        return cls.from_pretrained(folder, **absent)


def _denoiser_calls(pipe, **kwargs):
    """Run the pipeline and record every denoiser call: (input latents, timestep, raw output)."""
    net = pipe.transformer if hasattr(pipe, "transformer") and pipe.transformer is not None else pipe.unet
    calls = []

    def hook(module, args, kw, out):
        x = kw.get("hidden_states", args[0] if args else None)
        t = kw.get("timestep", args[1] if len(args) > 1 else None)
        calls.append((x.detach().clone(), t.detach().clone(), (out[0] if isinstance(out, tuple) else out.sample).detach().clone()))

    handle = net.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad(), float32_default():
            out = pipe(PROMPT, output_type="latent", **kwargs)
    finally:
        handle.remove()
    return calls, out


@pytest.mark.parametrize("name", ["sdxl", "sdxl-v", "sd3"])
def test_eps_pair_equals_the_pipeline_denoiser_split_by_hand(family_pipelines, name):
    folder = family_pipelines[name]
    model = DiffusersScoreModel.from_pretrained(folder)
    assert model.family == name.split("-")[0]
    assert model.prediction_type == {"sdxl": "epsilon", "sdxl-v": "v_prediction", "sd3": "flow"}[name]
    latents = initial_noise(model, [3])
    calls, _ = _denoiser_calls(_pipeline(folder), latents=latents, num_inference_steps=3, guidance_scale=5.0)
    x2, t2, raw2 = calls[1]  # the second step: alpha_t > 0 in every family
    x = x2[:1]
    t = t2.reshape(-1)[0].item()
    u, c = model.eps_pair(x, t, PROMPT)
    ref_u, ref_c = raw2[:1], raw2[1:]  # the pipeline's own batch: unconditional first
    torch.testing.assert_close(raw_prediction(model, u, x, t), ref_u, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(raw_prediction(model, c, x, t), ref_c, rtol=1e-4, atol=1e-4)
    assert float((ref_c - ref_u).abs().max()) > 1e-3  # the two branches differ: the comparison can fail


def test_sdxl_unconditional_branch_is_zeros_where_the_folder_forces_them(family_pipelines):
    zeros = DiffusersScoreModel.from_pretrained(family_pipelines["sdxl"])
    empty = DiffusersScoreModel.from_pretrained(family_pipelines["sdxl-v"])
    assert float(zeros.embed(None, 1).abs().max()) == 0.0
    assert float(empty.embed(None, 1).abs().max()) > 0.0
    torch.testing.assert_close(empty.embed(None, 1), empty.embed("", 1))
    assert zeros.time_ids.tolist() == [[8, 8, 0, 0, 8, 8]]  # 8 latent positions x 1 pixel (a one-level VAE), no crop


def test_sd3_sampler_is_the_pipeline_with_its_flow_match_euler_scheduler(family_pipelines):
    """memgeo's deterministic step in (alpha, sigma) form equals the scheduler's Euler step: whole generations agree."""
    folder = family_pipelines["sd3"]
    model = DiffusersScoreModel.from_pretrained(folder)
    pipe = _pipeline(folder)
    pipe.scheduler.set_timesteps(4)
    torch.testing.assert_close(model.timesteps(4), pipe.scheduler.timesteps.double())
    assert float(model.alpha(model.timesteps(4)[0])) == 0.0  # the first step is pure noise
    latents = initial_noise(model, [5])
    _, out = _denoiser_calls(pipe, latents=latents, num_inference_steps=4, guidance_scale=5.0)
    ours = ddim_sample(model, PROMPT, latents, n_steps=4, guidance_scale=5.0)
    torch.testing.assert_close(ours.x0, out.images, rtol=1e-4, atol=1e-4)
    unguided = ddim_sample(model, PROMPT, latents, n_steps=4, guidance_scale=1.0)
    assert float((unguided.x0 - ours.x0).abs().max()) > 1e-3  # guidance acts, the first step included


def test_sdxl_sampler_is_the_pipeline_with_a_ddim_scheduler(family_pipelines):
    """On SDXL, memgeo's CFG DDIM sampler equals the SDXL pipeline run with diffusers' DDIMScheduler (SD's settings)."""
    from diffusers import DDIMScheduler

    folder = family_pipelines["sdxl"]
    model = DiffusersScoreModel.from_pretrained(folder)
    pipe = _pipeline(folder)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    latents = initial_noise(model, [7])
    _, out = _denoiser_calls(pipe, latents=latents, num_inference_steps=4, guidance_scale=5.0)
    ours = ddim_sample(model, PROMPT, latents, n_steps=4, guidance_scale=5.0)
    torch.testing.assert_close(ours.x0, out.images, rtol=1e-4, atol=1e-4)


def test_flow_conversions_against_the_interpolant():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    for s in (1e-3, 0.3, 0.9, 1.0):
        x = (1 - s) * x0 + s * eps
        v = eps - x0
        torch.testing.assert_close(to_x0(v, x, 1 - s, s, "flow"), x0)
        torch.testing.assert_close(from_eps(eps, x, 1 - s, s, "flow"), v) if s < 1 else None
        torch.testing.assert_close(to_eps(v, x, 1 - s, s, "flow"), eps)


@pytest.mark.parametrize("name", ["sdxl", "sd3"])
@pytest.mark.parametrize("signal", list(SIGNALS))
def test_every_signal_runs_on_every_family(family_pipelines, name, signal):
    model = DiffusersScoreModel.from_pretrained(family_pipelines[name])
    kw = {} if not SIGNALS[signal].generates else {"n_steps": 4, "generator": torch.Generator().manual_seed(0)}
    if signal == "flipd":
        kw["t"] = model.timesteps(4)[2].item()
    if name == "sd3" and SIGNALS[signal].cross_attention:
        with pytest.raises(ValueError, match="joint"):
            SIGNALS[signal](model, PROMPT, initial_noise(model, 2), **kw)
        return
    res = SIGNALS[signal](model, PROMPT, initial_noise(model, 2), **kw)
    assert res.score.shape == (2,) and bool(torch.isfinite(res.score).all())
    if signal in ("guidance_norm", "anisotropy"):  # read where the condition acts, not at the flow's pure noise
        assert float(res.value.abs().min()) > 0


@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3"])
def test_lora_changes_outputs_and_fingerprint_and_loads_like_a_real_one(family_pipelines, tiny_pipelines, tmp_path, name):
    folder = tiny_pipelines["epsilon"] if name == "sd" else family_pipelines[name]
    lora = build_tiny_lora(folder, tmp_path / "lora")
    base = DiffusersScoreModel.from_pretrained(folder)
    tuned = DiffusersScoreModel.from_pretrained(folder, lora=lora.parent)  # a folder holding the adapter, as saved
    assert base.identity["fingerprint"] != tuned.identity["fingerprint"]
    x, t = initial_noise(base, [0]), base.timesteps(4)[1].item()
    assert float((base.eps(x, t, PROMPT) - tuned.eps(x, t, PROMPT)).abs().max()) > 1e-4
    # the same adapter through the family pipeline's own loader gives the same network outputs
    pipe = _pipeline(folder)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    net = pipe.transformer if name == "sd3" else pipe.unet
    emb = tuned.embed(PROMPT, 1)
    with torch.no_grad(), float32_default():
        ref = tuned.spec.call(net, x, torch.tensor([t]), emb, tuned.conditioning, tuned.time_ids)
    torch.testing.assert_close(raw_prediction(tuned, tuned.eps(x, t, PROMPT), x, t), ref, rtol=1e-4, atol=1e-4)
    assert base.identity == DiffusersScoreModel.from_pretrained(folder).identity  # the base is untouched


def test_lora_and_family_errors(family_pipelines, tiny_pipelines, tmp_path):
    with pytest.raises(ValueError, match="lora"):
        DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"], lora=tmp_path / "missing.safetensors")
    sd3_lora = build_tiny_lora(family_pipelines["sd3"], tmp_path / "sd3lora")
    with pytest.raises(ValueError, match="does not fit"):
        DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"], lora=sd3_lora)
    flux = tmp_path / "flux"
    (flux / "transformer").mkdir(parents=True)
    (flux / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="FLUX is not a supported family.*true_cfg_scale"):
        DiffusersScoreModel.from_pretrained(flux)
    other = tmp_path / "other"
    (other / "unet").mkdir(parents=True)
    (other / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(ValueError, match="supports"):
        DiffusersScoreModel.from_pretrained(other)


@pytest.mark.parametrize("name", ["sdxl", "sd3", "lora"])
def test_scan_explain_localize_generate_run_on_each_family(family_pipelines, tiny_pipelines, tmp_path, name, capsys):
    from memgeo.cli import main

    if name == "lora":
        model = ["--model", str(tiny_pipelines["epsilon"]),
                 "--lora", str(build_tiny_lora(tiny_pipelines["epsilon"], tmp_path / "adapter"))]
    else:
        model = ["--model", str(family_pipelines[name])]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red lighthouse\na blue cat\n")
    common = ["--seeds", "2", "--no-progress"]
    assert main(["scan", *model, "--prompts", str(prompts), "--out", str(tmp_path / "scan.jsonl"), "--steps", "4",
                 "--signals", "guidance_norm", "anisotropy", "kappa_delta", *common]) == 0
    assert main(["explain", *model, "--prompt", "a red lighthouse", "--out", str(tmp_path / "ex"), "--steps", "4", *common]) == 0
    assert main(["localize", *model, "--prompt", "a red lighthouse", "--out", str(tmp_path / "loc"), "--steps", "4",
                 *common]) == 0
    assert main(["generate", *model, "--prompt", "a red lighthouse", "--out", str(tmp_path / "gen"), "--steps", "4",
                 *common]) == 0
    assert (tmp_path / "ex" / "explain.json").is_file() and (tmp_path / "loc" / "localize.json").is_file()


def test_a_scan_of_the_fine_tune_is_never_mixed_with_the_base(tiny_pipelines, tmp_path, capsys):
    from memgeo.cli import main

    base = str(tiny_pipelines["epsilon"])
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red lighthouse\n")
    out = str(tmp_path / "scan.jsonl")
    args = ["--prompts", str(prompts), "--out", out, "--seeds", "1", "--no-progress", "--signals", "guidance_norm"]
    assert main(["scan", "--model", base, *args]) == 0
    before = (tmp_path / "scan.jsonl").read_text()
    assert main(["scan", "--model", base, "--lora", str(build_tiny_lora(base, tmp_path / "adapter")), *args]) == 2
    assert "fingerprint" in capsys.readouterr().err
    assert (tmp_path / "scan.jsonl").read_text() == before


def test_fine_tune_audit_finds_the_generation_it_was_given(tmp_path, monkeypatch):
    """On the testbed: the training images are one generation of a prompt (saved twice: a repeat), and training
    canvases. The audit finds that prompt's generation by the ratio criterion, and only it; the repeat counts once."""
    import numpy as np
    from PIL import Image

    from memgeo.scan.audit import audit_copies, format_audit, load_training_images
    from memgeo.testbed import load_testbed, testbed_data

    model = load_testbed()
    prompt = "thick five, thin eight, regular four, regular two"
    x0 = ddim_sample(model, prompt, initial_noise(model, [0]), n_steps=4).x0
    imgs = tmp_path / "train"
    imgs.mkdir()

    def save(img, name):
        Image.fromarray(((img.clamp(-1, 1).numpy() + 1) * 127.5).round().astype(np.uint8)).save(imgs / name)

    save(model.to_image(x0[0]), "copied.png")
    save(model.to_image(x0[0]), "copied_again.png")  # a repeat in the folder
    for i, canvas in enumerate(testbed_data().images[:6]):
        save(canvas, f"other{i}.png")
    training = load_training_images(model, imgs)
    assert training.files == 8 and training.images.shape == (7, 1, 16, 16)
    assert "copied.png = copied_again.png" in training.names
    other = "thin one, thin one, thin one, thin one"
    record = audit_copies(model, [prompt, other], training, seeds=(0,), n_steps=4, out=tmp_path,
                          gallery=tmp_path / "copies.png")
    rows = {r["text"]: r for r in record["prompts"]}
    assert rows[prompt]["nearest"] == ["copied.png = copied_again.png"] and rows[prompt]["copy_rate"] == 1.0
    assert rows[prompt]["ratios"][0] < 0.05  # clipping to [-1, 1] and 8-bit rounding only
    assert rows[other]["copy_rate"] == 0.0
    assert record["regurgitation"] == {"copied.png = copied_again.png": 1}
    assert (tmp_path / "copies.png").stat().st_size > 0
    assert "1 of 2 prompts copy" in format_audit(record)
    drawn = []  # the gallery marks copies at the audit's own bound
    monkeypatch.setattr("memgeo.plotting.plot_copy_gallery", lambda rows, path, **kw: drawn.extend(rows))
    audit_copies(model, [prompt], training, seeds=(0,), n_steps=4, ratio=0.2, gallery=tmp_path / "g.png")
    assert [r["bound"] for r in drawn] == [0.2] and drawn[0]["is_target"] is None  # an audit has no target
    with pytest.raises(ValueError, match="another model, training set, prompt list"):
        audit_copies(model, [prompt], training, seeds=(0,), n_steps=4, out=tmp_path)  # other prompts: refused
    with pytest.raises(ValueError, match="another model"):
        audit_copies(model, [prompt, other], training, seeds=(0, 1), n_steps=4, out=tmp_path)
    with pytest.raises(ValueError, match="folder of images"):
        load_training_images(model, tmp_path / "missing")
    (tmp_path / "one").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "one" / "a.png")
    with pytest.raises(ValueError, match="at least 2 images"):
        load_training_images(model, tmp_path / "one")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "one" / "b.png")
    with pytest.raises(ValueError, match="2 distinct images"):
        load_training_images(model, tmp_path / "one")


def test_fine_tune_audit_decodes_with_the_folder_vae(tiny_pipelines, tmp_path):
    import numpy as np
    from diffusers import AutoencoderKL
    from PIL import Image

    from memgeo.scan.audit import load_training_images

    model = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])
    rng = np.random.default_rng(0)
    for i in range(3):  # larger than the model's images, not square: resized and centre-cropped
        Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.jpg")
    training = load_training_images(model, tmp_path)
    side = model.event_shape[1] * model.vae_scale_factor
    assert training.images.shape == (3, 3, side, side) and "VAE" in training.space
    x0 = initial_noise(model, [0, 1])
    vae = AutoencoderKL.from_pretrained(tiny_pipelines["epsilon"], subfolder="vae", torch_dtype=torch.float32)
    with torch.no_grad():
        want = vae.decode(x0.float() / vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(training.decode(x0), want)


def test_the_copy_criterion_judges_blends_repeats_and_local_copies():
    """A blend of training images is not a copy; a training image is (ratio 0) however often it repeats; a patch
    copied into a new image is found at its patch; ratios are brute-force ones."""
    from memgeo.scan.audit import copy_ratios
    from memgeo.testbed import testbed_data
    from memgeo.testbed.truth import distinct_rows

    canvases = testbed_data().images[:40, None].double()  # [40, 1, 16, 16]
    training = distinct_rows(canvases)[0].reshape(-1, 1, 16, 16)
    blend = canvases[:2].mean(0, keepdim=True)
    mean30 = canvases[:30].mean(0, keepdim=True)
    c = copy_ratios(torch.cat([blend, mean30, canvases[5:6]]), training, patches=1)
    assert float(c["ratio"][0]) > 0.9 and float(c["ratio"][1]) > 1 / 3  # blends: about as near several images
    assert float(c["ratio"][2]) == 0.0 and int(c["nearest"][2]) == int((training.flatten(1) == canvases[5].flatten()).all(1).nonzero()[0])
    local = canvases[10:11].clone()
    local[..., :8, :8] = canvases[20, :, :8, :8]  # the top-left quarter of another training image
    whole = copy_ratios(local, training, patches=1)
    quarters = copy_ratios(local, training, patches=2)
    assert float(whole["ratio"][0]) > 1 / 3 > float(quarters["ratio"][0]) and int(quarters["where"][0]) == 0
    d = sorted(float((local[0] - t).norm()) for t in training)
    assert float(whole["ratio"][0]) == pytest.approx(d[0] / d[1], rel=1e-9)


def test_distilled_checkpoints_load_with_a_warning(tiny_pipelines, tmp_path):
    """A config that says the model is distilled (a guidance-embedding UNet, a consistency scheduler, a turbo name)
    loads with a warning naming what says so; a plain SD folder loads silently."""
    import shutil
    import warnings

    from memgeo.models.families import distillation_notes

    assert distillation_notes({"unet": {"time_cond_proj_dim": None}, "scheduler": {"_class_name": "DDIMScheduler"}},
                              ["runwayml/stable-diffusion-v1-5"]) == []
    assert len(distillation_notes({"unet": {"time_cond_proj_dim": 256}}, [])) == 1
    assert "turbo" in distillation_notes({}, ["stabilityai/sdxl-turbo"])[0]
    folder = tmp_path / "lcm-model"
    shutil.copytree(tiny_pipelines["epsilon"], folder)
    cfg_file = folder / "scheduler" / "scheduler_config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "_class_name": "LCMScheduler"}))
    with pytest.warns(UserWarning, match="looks distilled.*LCMScheduler.*lcm"):
        DiffusersScoreModel.from_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])


def test_sd3_t5_reads_the_raw_prompt_as_the_pipeline_does(tmp_path):
    """With a T5 encoder, the condition equals ``StableDiffusion3Pipeline.encode_prompt``'s (T5 given the raw prompt,
    up to 256 tokens), for a prompt longer than CLIP's 77 positions, with capitals, digits and punctuation."""
    import diffusers

    from memgeo.models.families import pack_condition
    from memgeo.models.tiny import build_tiny_sd3_pipeline

    folder = build_tiny_sd3_pipeline(tmp_path / "sd3t5", t5=True)
    model = DiffusersScoreModel.from_pretrained(folder)
    pipe = diffusers.StableDiffusion3Pipeline.from_pretrained(folder)
    prompt = "A Lighthouse at Dusk, 1999: waves; gulls & spray -- " * 3  # 156 characters, one token each
    with torch.no_grad(), float32_default():
        emb, neg, pooled, neg_pooled = pipe.encode_prompt(prompt, prompt, prompt, do_classifier_free_guidance=True,
                                                          negative_prompt="", max_sequence_length=256)
    torch.testing.assert_close(model.embed(prompt, 1)[0], pack_condition(emb, pooled)[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.embed(None, 1)[0], pack_condition(neg, neg_pooled)[0], rtol=1e-5, atol=1e-5)
    clipped = model.conditioning.encode_ids(model.conditioning.ids([prompt]))  # without the text: decoded CLIP ids
    assert not torch.allclose(clipped[0], model.embed(prompt, 1)[0])  # the decoded ids lose the prompt's tail


def test_copy_gallery_marks_by_target_only_where_a_row_has_one(monkeypatch, tmp_path):
    """A testbed row marks a copy in red only when its nearest image is the prompt's target and titles that image
    "nearest = target"; an audit row (no target, ``is_target`` None) marks every copy and never says "target"."""
    import memgeo.plotting as plotting

    figures = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path, **kw: figures.append(fig))
    img = torch.zeros(1, 4, 4)
    rows = [{"label": "testbed: a", "target": img, "generations": [img, img], "nearest": [img, img],
             "ratios": [0.1, 0.1], "is_target": [True, False]},
            {"label": "audit: b", "target": None, "generations": [img], "nearest": [img], "ratios": [0.1],
             "is_target": None, "bound": 0.2}]
    plotting.plot_copy_gallery(rows, tmp_path / "g.png")
    axes = figures[0].axes
    per = 1 + 2 * 2  # target, then two (generation, nearest) pairs
    titles = [(a.get_title(), a.title.get_color()) for a in axes]
    testbed, audit = titles[:per], titles[per:]
    assert testbed[1] == ("r=0.10 copy", "red") and testbed[2][0] == "nearest = target"
    assert testbed[3] == ("r=0.10 copy", "black") and testbed[4][0] == "nearest"
    assert audit[1] == ("r=0.10 copy", "red") and audit[2][0] == "nearest"


def test_a_new_family_is_its_spec_and_one_line_in_specs(monkeypatch, tmp_path):
    """docs/extending.md, "A model family": a FamilySpec subclass listed in SPECS is loaded through the real
    from_pretrained path, named in the model's identity, and priced by its real size."""
    import json

    from memgeo.models import DiffusersScoreModel
    from memgeo.models.architectures import family_sizes
    from memgeo.models.families import SPECS
    from memgeo.models.families.sd import StableDiffusion
    from memgeo.models.tiny import build_tiny_pipeline

    class Toy(StableDiffusion):
        name = "toy"
        pipeline = "ToyDiffusionPipeline"
        in_fingerprint = True
        real_size = ("UNet2DConditionModel", {"sample_size": 8}, (4, 8, 8))

    monkeypatch.setitem(SPECS, "toy", Toy())
    folder = build_tiny_pipeline(tmp_path / "toy")
    sd = DiffusersScoreModel.from_pretrained(folder)
    index = folder / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": "ToyDiffusionPipeline"}))
    toy = DiffusersScoreModel.from_pretrained(folder)
    assert toy.family == "toy" and sd.family == "sd"
    x = torch.randn(2, *toy.event_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    assert torch.equal(toy.eps(x, 500, "a cat"), sd.eps(x, 500, "a cat"))  # the same network, read the same way
    assert toy.identity != sd.identity  # results of the two families never mix
    assert family_sizes()["toy"][2] == (4, 8, 8)
