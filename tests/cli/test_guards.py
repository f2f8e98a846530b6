"""Nothing trained or labelled is overwritten or misapplied, and every argument is checked before any work: each case
exits 2 with a message naming the argument, before any model evaluation, and leaves every watched file as it was."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from memgeo.cli import main
from memgeo.testbed import TESTBED_DIR

REPO = Path(__file__).resolve().parents[2]
FINETUNE = REPO / "benchmarks" / "results" / "finetune_testbed"  # a LoRA of the small-data testbed
SMALL_DATA = REPO / "benchmarks" / "results" / "small_data_testbed"


def tree_digest(folder: Path) -> dict:
    """Every file below ``folder`` with the SHA-256 of its bytes (an absent folder: {})."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A copy of the embedded testbed: a trained model with ground truth from its label seeds."""
    folder = tmp_path_factory.mktemp("guards") / "F"
    shutil.copytree(TESTBED_DIR, folder)
    return folder


def ground_truth_words(folder) -> str:
    """How a refusal names the ground truth in ``folder``: the count of its label seeds, as recorded."""
    return f"ground truth from {json.loads((Path(folder) / 'testbed.json').read_text())['ground_truth']['seeds']} seeds"


@pytest.fixture
def no_evaluation(monkeypatch):
    """Fail the test if any UNet is evaluated (a refusal must come before any work)."""
    from diffusers import UNet2DConditionModel

    def refuse(*args, **kwargs):
        raise AssertionError("a model was evaluated before the refusal")

    monkeypatch.setattr(UNet2DConditionModel, "forward", refuse)


def refused(argv, capsys, *names, watched=()):
    """Run ``memgeo argv``; assert exit 2, every one of ``names`` in the message, and the ``watched`` folders
    unchanged; returns the message."""
    before = [tree_digest(Path(w)) for w in watched]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    for name in names:
        assert name in err, err
    assert [tree_digest(Path(w)) for w in watched] == before
    return err


def test_training_into_a_trained_model_with_ground_truth_is_refused(trained, tmp_path, capsys, no_evaluation):
    err = refused(["testbed", "train", "--regime", "sd-ladder-shared", "--steps", "10", "--out", trained], capsys,
                  "--out", "--overwrite", "20000 steps", ground_truth_words(trained), watched=[trained])
    assert str(trained) in err
    refused(["testbed", "finetune", "--steps", "10", "--out", trained], capsys, "--out", "--overwrite",
            watched=[trained])


def test_the_package_weights_are_refused_always(capsys, no_evaluation):
    for argv in (["testbed", "train", "--steps", "1", "--out", TESTBED_DIR],
                 ["testbed", "train", "--steps", "1", "--out", TESTBED_DIR, "--overwrite"],
                 ["testbed", "finetune", "--steps", "1", "--out", TESTBED_DIR / "new"]):
        refused(argv, capsys, "--out", "inside the installed package", watched=[TESTBED_DIR])


def test_a_lora_on_another_base_is_refused_with_both_fingerprints(tmp_path, capsys, no_evaluation):
    from memgeo.testbed import weights_fingerprint

    recorded = json.loads((FINETUNE / "testbed.json").read_text())["base_fingerprint"]
    prompts = tmp_path / "p.txt"
    prompts.write_text("thin seven, thick two, regular one, thin zero\n")
    err = refused(["scan", "--prompts", prompts, "--lora", FINETUNE, "--out", tmp_path / "L.jsonl", "--no-progress"],
                  capsys, "--lora", "--model", recorded[:16], weights_fingerprint(TESTBED_DIR)[:16],
                  watched=[tmp_path, FINETUNE])
    assert not (tmp_path / "L.jsonl").exists() and "L.report.md" not in err


def test_a_lora_without_a_recorded_base_is_said_once_and_the_pairing_recorded(tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(FINETUNE / "pytorch_lora_weights.safetensors", bare)
    prompts = tmp_path / "p.txt"
    prompts.write_text("thin seven, thick two, regular one, thin zero\n")
    out = tmp_path / "s.jsonl"
    code = main(["scan", "--model", str(SMALL_DATA), "--lora", str(bare), "--prompts", str(prompts), "--out", str(out),
                 "--signals", "guidance_norm", "--seeds", "1", "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("records no base fingerprint") == 1
    from memgeo.testbed import weights_fingerprint

    header = json.loads(out.read_text().splitlines()[0])
    assert header["model"]["lora_pairing"] == {"lora": str(bare), "base": str(SMALL_DATA), "checked": False,
                                               "base_fingerprint": weights_fingerprint(SMALL_DATA)}


def test_outputs_are_checked_before_any_work_and_nothing_is_created(tmp_path, capsys, no_evaluation):
    missing = tmp_path / "nonexistent" / "dir"
    refused(["testbed", "truth", "--out", missing / "t.json", "--no-progress"], capsys, "--out", "does not exist",
            watched=[tmp_path])
    refused(["testbed", "truth", "--out", tmp_path / "t.json", "--gallery", tmp_path / "g.jpg", "--no-progress"],
            capsys, "--gallery", ".png", watched=[tmp_path])
    refused(["generate", "--prompt", "thin seven", "--out", tmp_path / "g.png", "--no-progress"], capsys, "--out",
            "folder", watched=[tmp_path])
    assert not (tmp_path / "g.png").exists()
    for command in (["explain"], ["localize"]):
        refused([*command, "--prompt", "thin seven", "--out", tmp_path / "e.png", "--no-progress"], capsys, "--out",
                watched=[tmp_path])
    refused(["bench", "--out", missing, "--no-progress"], capsys, "--out", "does not exist", watched=[tmp_path])
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog\n")
    refused(["scan", "--prompts", prompts, "--out", missing / "s.jsonl", "--no-progress"], capsys, "--out",
            watched=[tmp_path])
    refused(["scan", "--prompts", prompts, "--out", tmp_path / "s.jsonl", "--report", missing / "r.md",
             "--no-progress"], capsys, "--report", watched=[tmp_path])


def test_ranges_that_depend_on_the_model_are_checked_before_any_evaluation(tmp_path, capsys, no_evaluation):
    prompts = tmp_path / "p.txt"
    prompts.write_text("thin seven, thick two, regular one, thin zero\n")
    out = tmp_path / "s.jsonl"
    refused(["scan", "--prompts", prompts, "--out", out, "--signals", "flipd", "--flipd-t", "-3", "--no-progress"],
            capsys, "--flipd-t", "[1, 999]", watched=[tmp_path])
    refused(["scan", "--prompts", prompts, "--out", out, "--signals", "flipd", "--flipd-t", "1000", "--no-progress"],
            capsys, "--flipd-t", watched=[tmp_path])
    refused(["scan", "--prompts", prompts, "--out", out, "--steps", "5000", "--no-progress"], capsys, "--steps",
            watched=[tmp_path])
    refused(["generate", "--prompt", "thin seven", "--steps", "5000", "--out", tmp_path / "g", "--no-progress"],
            capsys, "n_steps", watched=[tmp_path])
    refused(["localize", "--prompt", "thin seven", "--steps", "10", "--step", "11", "--out", tmp_path / "l",
             "--no-progress"], capsys, "--step", watched=[tmp_path])
    assert not out.exists() and not (tmp_path / "g").exists()


def test_ground_truth_is_never_replaced_without_overwrite(trained, tmp_path, capsys, no_evaluation):
    refused(["testbed", "truth", "--model", trained, "--no-progress"], capsys, "--out", ground_truth_words(trained),
            "--overwrite", watched=[trained])
    other = tmp_path / "notes.json"
    other.write_text("{}")
    refused(["testbed", "truth", "--model", trained, "--out", other, "--no-progress"], capsys, "--out", "--overwrite",
            watched=[tmp_path, trained])


def test_a_run_resumes_its_own_checkpoint_and_overwrite_trains_from_scratch(tmp_path):
    from memgeo.testbed import build_canvas_data, train_testbed
    from memgeo.testbed.folder import check_model_output

    small = build_canvas_data(n_single=40, n_per_kind=2, n_ordinary=4, n_heldout=2, seed=0)
    kw = dict(batch_size=4, checkpoint_every=1, progress=False, data=small)
    train_testbed(tmp_path / "r", steps=1, **kw)
    train_testbed(tmp_path / "r", steps=2, **kw)  # the same run resumes: allowed
    assert json.loads((tmp_path / "r/testbed.json").read_text())["steps"] == 2
    meta = json.loads((tmp_path / "r/testbed.json").read_text())
    (tmp_path / "r/testbed.json").write_text(json.dumps({**meta, "ground_truth": {"seeds": 32}}))
    with pytest.raises(ValueError, match="ground truth from 32 seeds"):  # resuming would replace ground truth
        train_testbed(tmp_path / "r", steps=3, **kw)
    with pytest.raises(ValueError, match="ground truth"):
        check_model_output(tmp_path / "r")
    train_testbed(tmp_path / "r", steps=1, overwrite=True, **kw)
    assert json.loads((tmp_path / "r/testbed.json").read_text())["steps"] == 1  # from scratch


def test_loading_a_lora_prints_no_scheduler_configuration(capsys):
    from memgeo.testbed import load_testbed

    load_testbed(FINETUNE)
    err = capsys.readouterr().err
    assert "DDIMScheduler" not in err and "deprecated" not in err.lower()
