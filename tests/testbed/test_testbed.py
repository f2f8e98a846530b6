"""The memorization testbed: its data, resumable training, the shipped weights and the leaderboard."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import torch

import memgeo.testbed as tb
from memgeo.sampling import ddim_sample, initial_noise
from memgeo.testbed import (
    TESTBED_DIR,
    build_canvas_data,
    copied_cells,
    generation_copies,
    load_testbed,
    memorization_ground_truth,
    nearest_neighbour_threshold,
    to_images,
    to_latents,
    train_testbed,
)


@pytest.fixture(scope="module")
def data():
    return build_canvas_data()


def test_the_testbed_is_built_on_canvas_data(data):
    assert data.images.shape[1:] == (16, 16) and len(data.images) == len(data.layout)
    assert float(data.images.min()) == -1.0 and float(data.images.max()) == 1.0
    kinds = Counter(p.get("memorization") or p["kind"] for p in data.prompts)
    assert all(kinds[k] >= 10 for k in ("matching", "template", "local", "ordinary", "heldout"))
    assert build_canvas_data(**data.settings).items == data.items  # the recorded settings rebuild it


def test_latents_are_a_permutation_of_pixels(data):
    lat = to_latents(data.images[:5])
    assert lat.shape == (5, 4, 8, 8)
    torch.testing.assert_close(to_images(lat), data.images[:5])
    torch.testing.assert_close(lat.flatten(1).norm(dim=-1), data.images[:5].flatten(1).norm(dim=-1))


def test_nearest_neighbour_threshold():
    imgs = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.5], [10.0, 0.0]]).reshape(4, 2, 1)
    # nearest-neighbour distances: 5, 0.5, 0.5, sqrt(49 + 16); the minimum is the 0-quantile
    assert nearest_neighbour_threshold(imgs, 0.0) == pytest.approx(0.5)


def test_copies_are_counted_cell_by_cell(data):
    thr = nearest_neighbour_threshold(data.digits)
    copied, dist = copied_cells(data.canvases[:6], data.digits, thr)
    assert torch.equal(copied, data.layout[:6]) and float(dist.max()) == 0.0  # training canvases copy themselves
    by_kind = {p["memorization"]: p for p in data.prompts if p.get("memorization")}
    gen = torch.Generator().manual_seed(0)
    for kind, p in by_kind.items():
        exact = data.canvases[p["targets"][-1]][None]
        noisy = (exact + 0.9 * torch.randn(exact.shape, generator=gen)).clamp(-1, 1)
        c = generation_copies(data, p, torch.cat([exact, noisy]), thr)
        assert c["target"].tolist() == [True, False] and c["canvas"].tolist() == [True, False]
        cells = [(slice(0, 8), slice(0, 8)), (slice(0, 8), slice(8, 16)), (slice(8, 16), slice(0, 8)),
                 (slice(8, 16), slice(8, 16))]
        far = [[float((noisy[0][r, q] - data.canvases[i][r, q]).norm()) for r, q in cells] for i in p["targets"]]
        pos = tb.mask_position(p["mask"]) if kind == "local" else None
        expect = min(f[pos] if kind == "local" else max(f) for f in far)  # worst cell, or the duplicated one
        assert c["target_distance"][0] == 0 and c["target_distance"][1].item() == pytest.approx(expect, rel=1e-6)
        assert c["target_distance"][1] > thr
    local = by_kind["local"]
    keep = torch.tensor(local["mask"], dtype=torch.bool)
    part = torch.where(keep, data.canvases[local["targets"][0]], torch.zeros(16, 16))[None]  # only the duplicated cell
    c = generation_copies(data, local, part, thr)
    assert c["target"].tolist() == [True] and c["canvas"].tolist() == [False]
    assert c["target_distance"].tolist() == [0.0]  # the duplicated cell alone decides a local prompt
    assert int(c["cells"].sum()) == 1
    template = by_kind["template"]
    for i in template["targets"]:  # any variant counts for a template prompt
        assert generation_copies(data, template, data.canvases[i][None], thr)["target"].item()
    other = next(i for i in range(len(data.canvases)) if i not in template["targets"])
    assert not generation_copies(data, template, data.canvases[other][None], thr)["target"].item()


def test_mask_positions():
    from memgeo.testbed.canvas import position_mask

    assert [tb.mask_position(position_mask(q)) for q in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="16x16"):
        tb.mask_position([[1] * 8] * 8)


def test_training_resumes_bit_for_bit(tmp_path):
    small = build_canvas_data(n_single=20, n_per_kind=2, n_ordinary=4, n_heldout=2)
    train_testbed(tmp_path / "a", steps=4, batch_size=8, checkpoint_every=2, progress=False, data=small)
    train_testbed(tmp_path / "b", steps=2, batch_size=8, checkpoint_every=2, progress=False, data=small)
    train_testbed(tmp_path / "b", steps=4, batch_size=8, checkpoint_every=2, progress=False, data=small)  # resumes at 2
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a/unet/diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b/unet/diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((tmp_path / "b/testbed.json").read_text())
    assert meta["steps"] == 4 and meta["data"] == {"builder": "canvas", **small.settings}
    assert tb.testbed_data(tmp_path / "b").items == small.items  # the data is rebuilt from testbed.json
    model = load_testbed(tmp_path / "b")  # the trained folder loads through the SD path
    assert model.event_shape == (4, 8, 8)
    rows = memorization_ground_truth(model, seeds=2, n_steps=3)  # data and prompts come from the folder
    assert len(rows) == len(small.prompts) and all(0 <= r["copy_rate"] <= 1 for r in rows)
    assert all("target_rate" in r for r in rows if r["targets"])


def test_grammar_words_are_single_tokens(tmp_path):
    from memgeo.models.tiny import build_tokenizer
    from memgeo.testbed.canvas import DIGITS, THICKNESS

    tok = build_tokenizer(tmp_path, words=DIGITS + THICKNESS)
    ids = tok("regular three, thick seven, thin eight, regular zero").input_ids
    assert len(ids) == 2 + 4 * 2 + 3  # start, 8 words, 3 commas, end
    text = "thinner sevens, café"  # anything else still tokenizes, byte by byte
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True).replace(" ,", ",") == text


def test_shipped_weights_load_through_the_sd_path():
    assert (TESTBED_DIR / "unet" / "diffusion_pytorch_model.safetensors").exists()
    size = sum(f.stat().st_size for f in TESTBED_DIR.rglob("*") if f.is_file())
    assert size <= 20 * 2**20
    model = load_testbed()
    assert model.event_shape == (4, 8, 8) and model.prediction_type == "epsilon"
    meta = tb.testbed_metadata()
    for p in meta["prompts"]:
        assert "copy_rate" in p and ("target_rate" in p) == bool(p["targets"])
        if p["kind"] == "memorized":
            assert p["memorization"] in ("matching", "template", "local")
            assert ("mask" in p) == (p["memorization"] == "local")


def test_memorized_prompts_reproduce_targets_and_ordinary_prompts_do_not():
    model, meta, data = load_testbed(), tb.testbed_metadata(), tb.testbed_data()
    mem = sorted((p for p in meta["prompts"] if p["kind"] == "memorized"), key=lambda p: -p["target_rate"])[:3]
    ordinary = [p for p in meta["prompts"] if p["kind"] == "ordinary" and p["target_rate"] == 0][:3]
    assert mem[-1]["target_rate"] >= 0.875 and len(ordinary) == 3
    x_T = initial_noise(model, [100, 101, 102, 103])  # seeds unseen by the stored ground truth
    for p in mem + ordinary:
        gen = ddim_sample(model, p["text"], x_T, n_steps=50).denoised
        hits = int(tb.target_copies(data, meta["ground_truth"], p, to_images(gen.float())).sum())
        if p["kind"] == "memorized":
            assert hits >= 2, (p["text"], hits)
        else:
            assert hits == 0, (p["text"], hits)


# guided samples of the exact mixture do have LID > d at t = 1: the warning is right, and expected here
@pytest.mark.filterwarnings("ignore:FLIPD at t = 1 is above the ambient dimension")
@pytest.mark.slow  # every signal on the testbed: over 3 minutes on 2 cores (make run runs the same job)
def test_leaderboard_end_to_end_reduced(tmp_path):
    from memgeo.experiments import run_leaderboards

    lines = []
    res = run_leaderboards(out_dir=tmp_path, seeds=2, n_steps=6, mixture_conditions=3, max_prompts=6, print_fn=lines.append)
    text = "\n".join(lines)
    for name in ("guidance_norm", "anisotropy", "sharpness", "p_laplace", "kappa_delta", "flipd"):
        assert f"| {name} |" in res["testbed"]["table"] and f"| {name} |" in res["mixture"]["table"]
    assert "strict" in text and (tmp_path / "leaderboard.md").exists()
    assert "AUROC per prompt" in res["testbed"]["breakdown"] and "TPR@1%FPR per prompt" in res["testbed"]["breakdown"]
    assert "| caption-only baseline |" in res["testbed"]["table"]
    assert {r["kind"] for r in res["testbed"]["duplication_curve"]} >= {"matching", "template", "local"}
    for png in ("trajectory_auroc_mixture.png", "trajectory_auroc_testbed.png", "roc_testbed.png", "rate_vs_duplication.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert len(res["testbed"]["curves"]["combined"]) == 6
    saved = json.loads((tmp_path / "leaderboard.json").read_text())  # every score kept, with its prompt and label
    assert [r["signal"] for r in saved["rows"]] == [r.signal for r in res["testbed"]["rows"]]
    assert all(np.allclose(s["scores"], r.scores) for s, r in zip(saved["rows"], res["testbed"]["rows"]))
    assert len(saved["texts"]) == len(saved["labels"]) == 6 and "every-kind targets" in (tmp_path / "leaderboard.md").read_text()


def test_training_time_mitigation_leaves_out_samples_over_the_threshold(tmp_path):
    from safetensors.torch import load_file

    small = build_canvas_data(n_single=20, n_per_kind=2, n_ordinary=4, n_heldout=2)
    kw = dict(steps=3, batch_size=8, checkpoint_every=3, progress=False, data=small)
    train_testbed(tmp_path / "plain", **kw)
    train_testbed(tmp_path / "huge", mitigate_threshold=1e9, **kw)  # leaves nothing out: the plain run, bit for bit
    # without prompt dropout (an unconditional sample's gap is exactly 0, so it is always kept), a tiny
    # threshold leaves every sample out: no update at all
    train_testbed(tmp_path / "tiny", mitigate_threshold=1e-9, **{**kw, "dropout": 0.0})
    train_testbed(tmp_path / "init", **{**kw, "steps": 0})
    names = ("plain", "huge", "tiny", "init")
    w = {k: load_file(tmp_path / k / "unet/diffusion_pytorch_model.safetensors") for k in names}
    assert all(torch.equal(w["plain"][n], w["huge"][n]) for n in w["plain"])
    assert not all(torch.equal(w["plain"][n], w["tiny"][n]) for n in w["plain"])
    assert all(torch.equal(w["init"][n], w["tiny"][n]) for n in w["init"])
    meta = {k: json.loads((tmp_path / k / "testbed.json").read_text()) for k in ("plain", "huge", "tiny")}
    assert "mitigation" not in meta["plain"]
    assert sum(meta["huge"]["mitigation"]["samples_left_out"].values()) == 0
    left = meta["tiny"]["mitigation"]["samples_left_out"]
    assert left["unconditional"] == 0 and left["duplicated"] + left["single"] == 3 * 8 == meta["tiny"]["mitigation"]["samples_drawn"]
    assert left["duplicated"] > 0 and left["single"] > 0
    with pytest.raises(ValueError, match="mitigate_threshold"):  # a checkpoint is never resumed under another setting
        train_testbed(tmp_path / "tiny", mitigate_threshold=2.0, **{**kw, "steps": 6, "dropout": 0.0})
    with pytest.raises(ValueError, match="positive"):
        train_testbed(tmp_path / "bad", mitigate_threshold=-1.0, **kw)


def test_the_fence_is_tukeys_far_out_fence_per_timestep_bin_of_the_recent_batches():
    """The label-free threshold against numpy's quartiles: per timestep bin, over the window's conditioned samples
    only; infinite before the start step and in a bin with fewer than 20 samples."""
    from memgeo.testbed.items import MITIGATION_RULES, _GapWindow

    rule = MITIGATION_RULES["fence"]
    win = _GapWindow("fence", batch_size=64, n_timesteps=1000)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (rule["window"], 64), generator=g)
    t[t // 100 == 3] = 250  # bin 3 left empty
    t[0, :5] = 350  # five samples in bin 3: too few
    norms = torch.rand((rule["window"], 64), generator=g) * (1 + t / 100)
    conditioned = torch.rand((rule["window"], 64), generator=g) > 0.1
    for row in range(rule["window"]):
        assert torch.isinf(win.limits(t[row])).all() or win.seen >= rule["start"]
        win.push(norms[row], t[row], conditioned[row])
    assert torch.isinf(win.limits(t[0])).all()  # 100 batches seen, the rule starts at 1000
    win.seen = rule["start"]
    probe = torch.tensor([5, 150, 999, 350])
    got = win.limits(probe)
    for i, b in enumerate((0, 1, 9)):
        values = norms[conditioned & (t // 100 == b)].numpy()
        q1, q3 = np.percentile(values, [25, 75])
        assert got[i].item() == pytest.approx(q3 + rule["k"] * (q3 - q1), rel=1e-5)
    assert torch.isinf(got[3])  # bin 3: 5 samples


def test_training_time_mitigation_by_the_fence_resumes_as_it_ran(tmp_path, monkeypatch):
    """With the fence, samples are left out once the window is full, and a run stopped at a checkpoint resumes with
    its window: the same weights as a run never stopped."""
    from safetensors.torch import load_file

    from memgeo.testbed import items

    # a fence at the window's first quartile (k = -1), so that a fresh network, whose gap norms shrink from step to
    # step, still leaves samples out
    monkeypatch.setitem(items.MITIGATION_RULES, "fence", {"k": -1.0, "window": 2, "bins": 1, "start": 2, "min_samples": 20})
    small = build_canvas_data(n_single=20, n_per_kind=2, n_ordinary=4, n_heldout=2)
    kw = dict(batch_size=16, progress=False, data=small)  # two batches hold the 20 samples a fence needs
    train_testbed(tmp_path / "plain", steps=6, checkpoint_every=6, **kw)
    train_testbed(tmp_path / "whole", steps=6, checkpoint_every=6, mitigate_rule="fence", snapshot_every=3, **kw)
    train_testbed(tmp_path / "stopped", steps=3, checkpoint_every=3, mitigate_rule="fence", **kw)
    train_testbed(tmp_path / "stopped", steps=6, checkpoint_every=3, mitigate_rule="fence", **kw)
    w = {k: load_file(tmp_path / k / "unet/diffusion_pytorch_model.safetensors") for k in ("plain", "whole", "stopped")}
    assert all(torch.equal(w["whole"][n], w["stopped"][n]) for n in w["whole"])
    assert not all(torch.equal(w["plain"][n], w["whole"][n]) for n in w["plain"])
    meta = json.loads((tmp_path / "whole" / "testbed.json").read_text())["mitigation"]
    assert meta["rule"] == "fence" and meta["k"] == -1.0 and "threshold" not in meta
    snap = json.loads((tmp_path / "whole" / "snapshots" / "step-3" / "testbed.json").read_text())["mitigation"]
    assert snap["rule"] == "fence" and snap["samples_drawn"] == 3 * 16  # a snapshot says how it was trained too
    left = sum(meta["samples_left_out"].values())
    assert 0 < left < 4 * 16 and meta["samples_left_out"]["unconditional"] == 0  # from step 2 on (4 batches)
    with pytest.raises(ValueError, match="mitigate_rule"):  # a checkpoint is never resumed under another setting
        train_testbed(tmp_path / "stopped", steps=9, checkpoint_every=3, **kw)
    train_testbed(tmp_path / "changed", steps=3, checkpoint_every=3, mitigate_rule="fence", **kw)
    monkeypatch.setitem(items.MITIGATION_RULES, "fence", {"k": 3.0, "window": 2, "bins": 1, "start": 2, "min_samples": 20})
    with pytest.raises(ValueError, match="set as"):  # nor under the same rule with other numbers
        train_testbed(tmp_path / "changed", steps=6, checkpoint_every=3, mitigate_rule="fence", **kw)
    with pytest.raises(ValueError, match="mitigate_rule must be one of"):
        train_testbed(tmp_path / "bad", steps=3, mitigate_rule="fence", mitigate_threshold=1.0, **kw)
    with pytest.raises(ValueError, match="mitigate_rule must be one of"):
        train_testbed(tmp_path / "bad", steps=3, mitigate_rule="quantile", **kw)


def test_nearest_neighbour_threshold_in_chunks_and_on_a_sample_of_queries():
    imgs = torch.randn(300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = torch.cdist(imgs, imgs)
    d.fill_diagonal_(float("inf"))
    exact = float(torch.quantile(d.min(1).values, 0.05))
    assert nearest_neighbour_threshold(imgs, 0.05, chunk=7) == pytest.approx(exact, rel=1e-12)
    sampled = nearest_neighbour_threshold(imgs, 0.5, max_queries=150)  # half the images as queries, all as neighbours
    assert abs(sampled - float(torch.quantile(d.min(1).values, 0.5))) < 0.1 * sampled


def test_augmented_testbed_copies_are_judged_against_the_warped_cells():
    small = build_canvas_data(n_single=60, n_per_kind=3, n_ordinary=4, n_heldout=2, ladder=(2, 4), augment=True)
    thr = nearest_neighbour_threshold(small.bank)
    copied, dist = copied_cells(small.canvases[:8], small.bank, thr)
    assert torch.equal(copied, small.cell_ids[:8]) and float(dist.max()) < 1e-6  # training canvases copy themselves (cdist round-off)
    local = next(p for p in small.prompts if p.get("memorization") == "local")
    c = generation_copies(small, local, small.canvases[local["targets"]], thr)
    assert bool(c["target"].all()) and bool(c["canvas"].all())  # each copy shares the kept warped cell
    digits_only = small.digits[small.layout[local["targets"][0]]][None]  # the unwarped digits of a copy
    canvas = digits_only.reshape(1, 2, 2, 8, 8).permute(0, 1, 3, 2, 4).reshape(1, 16, 16)
    assert not bool(generation_copies(small, local, canvas, thr)["canvas"].any())  # not a copy of any training image


def test_dropout_of_duplicated_captions_changes_only_what_the_unconditional_branch_sees(tmp_path):
    from safetensors.torch import load_file

    from memgeo.testbed import REGIMES

    small = build_canvas_data(n_single=20, n_per_kind=2, n_ordinary=4, n_heldout=2)
    kw = dict(steps=3, batch_size=8, checkpoint_every=3, progress=False, data=small)
    train_testbed(tmp_path / "plain", **kw)
    train_testbed(tmp_path / "same", dropout_duplicated=0.1, **kw)  # the default, said explicitly: bit for bit
    train_testbed(tmp_path / "all", **{**kw, "dropout": 1.0})  # every caption dropped
    train_testbed(tmp_path / "kept", dropout_duplicated=0.0, **{**kw, "dropout": 1.0})  # duplicated ones kept
    w = {k: load_file(tmp_path / k / "unet/diffusion_pytorch_model.safetensors") for k in ("plain", "same", "all", "kept")}
    assert all(torch.equal(w["plain"][n], w["same"][n]) for n in w["plain"])
    assert not all(torch.equal(w["all"][n], w["kept"][n]) for n in w["all"])
    assert json.loads((tmp_path / "kept" / "testbed.json").read_text())["dropout_duplicated"] == 0.0
    assert "dropout_duplicated" not in json.loads((tmp_path / "plain" / "testbed.json").read_text())
    with pytest.raises(ValueError, match="dropout_duplicated"):  # never resumed under another setting
        train_testbed(tmp_path / "kept", dropout_duplicated=0.5, **{**kw, "dropout": 1.0, "steps": 6})
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\]"):
        train_testbed(tmp_path / "bad", dropout=1.5, **kw)
    for causal, base in (("small-data-cond-only", "small-data"), ("sd-ladder-cond-only", "sd-ladder")):
        assert {**REGIMES[causal], "dropout_duplicated": None} == {**REGIMES[base], "dropout_duplicated": None}
        assert REGIMES[causal]["dropout_duplicated"] == 0.0


def test_companions_of_a_duplicated_caption_are_dropped_as_singles(tmp_path):
    from memgeo.models.tiny import build_tokenizer
    from memgeo.testbed.canvas import DIGITS, THICKNESS
    from memgeo.testbed.train import _TrainingItems

    ladder = {"matching": (4, 1), "template": (4,), "local": (3,)}
    data = build_canvas_data(n_single=10, n_ordinary=2, n_heldout=1, ladder=ladder, n_variants=2, seed=3,
                             companions={"matching": (5, 2), "template": (1,), "local": (2,)})
    tok = build_tokenizer(tmp_path, words=DIGITS + THICKNESS)
    items = _TrainingItems.of(data, tok, 32)
    targets = {i for p in data.prompts if p["kind"] == "memorized" and p["duplication"] > 1 for i in p["targets"]}
    want = [i in targets for i, _ in data.items]  # the duplicates; not the companions, the singles or a 1-copy rung
    assert items.duplicated.tolist() == want and 0 < sum(want) < len(want)


def test_learning_rate_decay_extends_a_constant_run_bit_for_bit(tmp_path):
    from safetensors.torch import load_file

    from memgeo.testbed.train import learning_rate

    assert [learning_rate(k, 6, 2.0) for k in range(6)] == [2.0] * 6
    assert [learning_rate(k, 6, 2.0, 4) for k in range(6)] == [2.0, 2.0, 2.0, 1.5, 1.0, 0.5]
    small = build_canvas_data(n_single=20, n_per_kind=2, n_ordinary=4, n_heldout=2)
    kw = dict(batch_size=8, checkpoint_every=2, progress=False, data=small)
    train_testbed(tmp_path / "once", steps=4, lr_decay_steps=2, **kw)
    train_testbed(tmp_path / "then", steps=2, **kw)  # a constant-rate run ...
    train_testbed(tmp_path / "then", steps=4, lr_decay_steps=2, **kw)  # ... extended by a decay that starts there
    train_testbed(tmp_path / "flat", steps=4, **kw)
    w = {k: load_file(tmp_path / k / "unet/diffusion_pytorch_model.safetensors") for k in ("once", "then", "flat")}
    assert all(torch.equal(w["once"][n], w["then"][n]) for n in w["once"])
    assert not all(torch.equal(w["once"][n], w["flat"][n]) for n in w["once"])  # the decay changed the last step
    assert json.loads((tmp_path / "then" / "testbed.json").read_text())["lr_decay_steps"] == 2
    assert "lr_decay_steps" not in json.loads((tmp_path / "flat" / "testbed.json").read_text())
    with pytest.raises(ValueError, match="learning-rate schedule"):  # its step 3 ran at half the rate
        train_testbed(tmp_path / "once", steps=6, **kw)
    for bad in (-1, 5, 1.5):
        with pytest.raises(ValueError, match=r"lr_decay_steps must be an integer in \[0, steps=4\]"):
            train_testbed(tmp_path / "bad", steps=4, lr_decay_steps=bad, **kw)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_a_repeated_image_does_not_switch_the_threshold_off():
    """One duplicate pair used to make the 1% quantile zero; distinct images only, so the repeat changes nothing."""
    imgs = torch.randn(300, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with_repeat = torch.cat([imgs, imgs[:1]])
    assert nearest_neighbour_threshold(with_repeat, 0.01) == nearest_neighbour_threshold(imgs, 0.01) > 0.1


def test_a_lora_fine_tune_resumes_bit_for_bit_and_loads_through_the_lora_path(tmp_path):
    """The fine-tune regime trains LoRA adapters on a frozen base testbed: stopped and resumed it gives the adapter of
    one run, the base's weights are untouched, and the saved adapter loads (diffusers' load_lora_weights) to the same
    model whether through its own folder or as --lora on the base."""
    from safetensors.torch import load_file

    from memgeo.cli import main
    from memgeo.models import DiffusersScoreModel

    small = build_canvas_data(n_single=40, n_per_kind=2, n_ordinary=2, n_heldout=1, ladder=(2, 3), seed=0)
    train_testbed(tmp_path / "base", steps=2, batch_size=8, data=small, progress=False)
    ft = build_canvas_data(n_single=30, n_per_kind=2, n_ordinary=2, n_heldout=1, ladder=(2, 3), augment=True, seed=5)
    kw = dict(regime="finetune", base=tmp_path / "base", batch_size=8, data=ft, progress=False, checkpoint_every=2)
    train_testbed(tmp_path / "a", steps=4, **kw)
    train_testbed(tmp_path / "b", steps=2, **kw)
    train_testbed(tmp_path / "b", steps=4, **kw)  # resumes at 2
    a = load_file(tmp_path / "a/pytorch_lora_weights.safetensors")
    b = load_file(tmp_path / "b/pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and len(a) > 0 and all(torch.equal(a[k], b[k]) for k in a)
    base_unet = load_file(tmp_path / "base/unet/diffusion_pytorch_model.safetensors")
    ckpt = load_file(tmp_path / "a/checkpoint/unet.safetensors")
    def in_ckpt(k):  # peft wraps an adapted layer: its base weights move under base_layer
        return k if k in ckpt else k.rsplit(".", 1)[0] + ".base_layer." + k.rsplit(".", 1)[1]

    assert all(torch.equal(ckpt[in_ckpt(k)], v) for k, v in base_unet.items())  # the base stays frozen
    meta = json.loads((tmp_path / "a/testbed.json").read_text())
    assert meta["base"] == str((tmp_path / "base").resolve()) and meta["dropout"] == 0.0
    tuned, base = load_testbed(tmp_path / "a"), load_testbed(tmp_path / "base")
    as_lora = DiffusersScoreModel.from_pretrained(tmp_path / "base", lora=tmp_path / "a")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    prompt = ft.prompts[0]["text"]
    torch.testing.assert_close(tuned.eps(x, 500, prompt), as_lora.eps(x, 500, prompt), rtol=0, atol=0)
    assert not torch.allclose(tuned.eps(x, 500, prompt), base.eps(x, 500, prompt))
    assert tb.testbed_folder(tuned) == tmp_path / "a" and tb.testbed_data(tmp_path / "a").items == ft.items
    with pytest.raises(ValueError, match="base must be a testbed folder"):
        train_testbed(tmp_path / "c", regime="finetune", data=ft, progress=False)
    with pytest.raises(ValueError, match="base is only for a fine-tune"):
        train_testbed(tmp_path / "c", base=tmp_path / "base", data=ft, progress=False)
    assert not (tmp_path / "c").exists()  # refused before anything was written
    assert main(["testbed", "finetune", "--base", str(tmp_path / "base"), "--out", str(tmp_path / "cli"), "--steps", "1",
                 "--no-progress"]) == 0
    assert (tmp_path / "cli" / "pytorch_lora_weights.safetensors").is_file()
    # the fine-tune knows its base's weights: a relative base is taken from its folder, other weights are refused
    weights = (tmp_path / "base/unet/diffusion_pytorch_model.safetensors").read_bytes()
    assert meta["base_fingerprint"] == hashlib.sha256(weights).hexdigest()
    (tmp_path / "a/testbed.json").write_text(json.dumps({**meta, "base": "../base"}))
    assert tb.base_folder(tmp_path / "a") == tmp_path / "a/../base"
    torch.testing.assert_close(load_testbed(tmp_path / "a").eps(x, 500, prompt), as_lora.eps(x, 500, prompt), rtol=0, atol=0)
    (tmp_path / "a/testbed.json").write_text(json.dumps({**meta, "base_fingerprint": "0" * 64}))
    with pytest.raises(ValueError, match="other base weights"):
        load_testbed(tmp_path / "a")
    (tmp_path / "a/testbed.json").write_text(json.dumps({**meta, "base": "../nowhere"}))
    with pytest.raises(FileNotFoundError, match="holds no testbed"):
        load_testbed(tmp_path / "a")


def test_a_half_precision_base_is_fine_tuned_in_float32(tmp_path):
    """The protocol's models (the embedded one among them) are stored in half precision: a fine-tune of one trains its
    adapters in float32 on the base's weights widened, and leaves the stored base as it was."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    small = build_canvas_data(n_single=40, n_per_kind=2, n_ordinary=2, n_heldout=1, ladder=(2, 3), seed=0)
    train_testbed(tmp_path / "base", steps=1, batch_size=8, data=small, progress=False)
    for part, cls in (("unet", UNet2DConditionModel), ("text_encoder", CLIPTextModel)):  # stored as the protocol's are
        cls.from_pretrained(tmp_path / "base" / part).half().save_pretrained(tmp_path / "base" / part)
    stored = (tmp_path / "base/unet/diffusion_pytorch_model.safetensors").read_bytes()
    ft = build_canvas_data(n_single=30, n_per_kind=2, n_ordinary=2, n_heldout=1, ladder=(2, 3), augment=True, seed=5)
    train_testbed(tmp_path / "ft", regime="finetune", base=tmp_path / "base", steps=2, batch_size=8, data=ft,
                  progress=False)
    adapter = load_file(tmp_path / "ft/pytorch_lora_weights.safetensors")
    assert adapter and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in adapter.values())
    assert (tmp_path / "base/unet/diffusion_pytorch_model.safetensors").read_bytes() == stored


def test_mixed_precision_takes_the_float32_steps_up_to_rounding(tmp_path):
    """bfloat16 autocast trains on the same batches, noises and timesteps as float32: its update of the weights over
    three steps points where the float32 run's does (the oracle: the float32 run itself); the precision is recorded,
    and a run never resumes in another precision."""
    from safetensors.torch import load_file

    small = build_canvas_data(n_single=20, n_per_kind=2, n_ordinary=4, n_heldout=2)
    kw = dict(batch_size=8, checkpoint_every=3, progress=False, data=small)
    train_testbed(tmp_path / "init", steps=0, **kw)
    for precision in ("float32", "bfloat16"):
        train_testbed(tmp_path / precision, steps=3, precision=precision, **kw)
    w = {k: load_file(tmp_path / k / "unet/diffusion_pytorch_model.safetensors") for k in ("init", "float32", "bfloat16")}
    update = {k: torch.cat([(w[k][n] - w["init"][n]).flatten() for n in w["init"]]) for k in ("float32", "bfloat16")}
    a, b = update["float32"], update["bfloat16"]
    assert float(a @ b / (a.norm() * b.norm())) > 0.98  # 0.996 measured; unrelated updates are near 0
    assert not torch.equal(a, b)  # autocast did act
    assert json.loads((tmp_path / "bfloat16" / "testbed.json").read_text())["precision"] == "bfloat16"
    assert "precision" not in json.loads((tmp_path / "float32" / "testbed.json").read_text())
    with pytest.raises(ValueError, match="precision='bfloat16', not 'float32'"):
        train_testbed(tmp_path / "bfloat16", steps=6, **kw)
    with pytest.raises(ValueError, match="precision must be one of"):
        train_testbed(tmp_path / "bad", steps=3, precision="fp16", **kw)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_a_new_regime_is_one_entry_of_regimes(monkeypatch, tmp_path):
    """docs/extending.md, "A testbed regime": one entry of REGIMES; the train command offers it, the trainer reads its
    data, steps and caption dropout, and the trained folder records it and rebuilds its data."""
    from memgeo.cli import build_parser
    from memgeo.testbed import REGIMES

    monkeypatch.setitem(REGIMES, "toy", {"data": {"n_single": 20, "n_per_kind": 2, "n_ordinary": 4, "n_heldout": 2},
                                         "steps": 2, "dropout": 0.25})
    args = build_parser().parse_args(["testbed", "train", "--regime", "toy", "--out", str(tmp_path / "t")])
    assert args.regime == "toy"
    out = train_testbed(tmp_path / "t", regime="toy", batch_size=4, checkpoint_every=1, progress=False)
    meta = json.loads((out / "testbed.json").read_text())
    assert meta["steps"] == 2 and meta["dropout"] == 0.25
    assert tb.testbed_data(out).items == build_canvas_data(seed=0, **REGIMES["toy"]["data"]).items
