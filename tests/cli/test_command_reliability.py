"""The commands refuse bad targets before any work, and an interrupted scan says what is saved and how to resume."""

import json

import pytest

from memgeo.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from memgeo.models import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("rel") / "eps", "epsilon")


def n_rows(path):
    return len(path.read_text().splitlines()) - 1


def test_cli_scan_refuses_a_prompt_file_as_out_and_leaves_it_as_it_was(tmp_path, tiny, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog\nthe sea\n")
    before = prompts.read_bytes()
    code = main(["scan", "--model", str(tiny), "--prompts", str(prompts), "--out", str(prompts), "--no-progress"])
    assert code == 2 and prompts.read_bytes() == before
    assert "is not a memgeo result store" in capsys.readouterr().err
    code = main(["scan", "--model", str(tiny), "--prompts", str(prompts), "--out", str(tmp_path), "--no-progress"])
    assert code == 2 and "is a directory" in capsys.readouterr().err


def test_cli_ctrl_c_says_in_one_line_what_is_saved_and_how_to_resume(tmp_path, tiny, capsys, monkeypatch):
    import memgeo.scan.run as scan

    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog\nthe sea\nan apple\n")
    real, calls = scan._compute_rows, []

    def stop_after_two(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        yield from real(*args, **kwargs)

    monkeypatch.setattr(scan, "_compute_rows", stop_after_two)
    argv = ["scan", "--model", str(tiny), "--prompts", str(prompts), "--out", str(tmp_path / "r.jsonl"),
            "--signals", "guidance_norm", "--seeds", "2", "--steps", "5", "--batch-size", "1", "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4 of the 6 results" in err[0] and "run the same command again to resume" in err[0]
    monkeypatch.setattr(scan, "_compute_rows", real)
    assert main(argv) == 0 and n_rows(tmp_path / "r.jsonl") == 6


def test_testbed_truth_never_rewrites_the_installed_package(tmp_path, capsys):
    from memgeo.testbed import TESTBED_DIR

    before = (TESTBED_DIR / "testbed.json").read_bytes()
    assert main(["testbed", "truth", "--no-progress"]) == 2
    assert "--out is required for the embedded testbed" in capsys.readouterr().err
    assert main(["testbed", "truth", "--out", str(TESTBED_DIR / "testbed.json"), "--no-progress"]) == 2
    assert "inside the installed package" in capsys.readouterr().err
    out = tmp_path / "truth.json"
    gallery = tmp_path / "replicas.png"
    assert main(["testbed", "truth", "--out", str(out), "--seeds", "1", "--steps", "2", "--no-progress",
                 "--criterion", "replication", "--gallery", str(gallery)]) == 0
    assert (TESTBED_DIR / "testbed.json").read_bytes() == before
    meta = json.loads(out.read_text())
    assert meta["ground_truth"]["seeds"] == 1 and len(meta["prompts"]) == len(json.loads(before)["prompts"])
    assert meta["ground_truth"]["criterion"]["verbatim"] == 1 / 3 and meta["ground_truth"]["criterion"]["replication"] == 0.5
    for p in meta["prompts"]:  # both levels kept; a verbatim copy is always a replica
        assert p["replica_rate"] >= p["copy_rate"] and (not p.get("targets") or p["target_replica_rate"] >= p["target_rate"])
    printed = capsys.readouterr().out
    assert "verbatim criterion" in printed and "replication criterion" in printed and gallery.stat().st_size > 0



def test_a_labelled_testbed_is_scanned_on_its_scoring_seeds_and_another_model_from_seed_0(tmp_path, tiny):
    """A scan never generates a testbed's prompts from the noises that labelled it: a testbed with ground truth is
    scanned from its scoring seeds, a model without any from seed 0."""
    from memgeo.testbed import build_canvas_data, train_testbed
    from memgeo.testbed.protocol import SCORING_SEED_START

    data = build_canvas_data(n_single=40, n_per_kind=2, n_ordinary=2, n_heldout=1, ladder=(2, 3), seed=0)
    train_testbed(tmp_path / "tb", steps=1, batch_size=8, data=data, progress=False)
    meta = json.loads((tmp_path / "tb/testbed.json").read_text())
    (tmp_path / "tb/testbed.json").write_text(json.dumps({**meta, "ground_truth": {"seeds": 32}}))
    prompts = tmp_path / "p.txt"
    prompts.write_text(data.prompts[0]["text"] + "\n")
    for model, first in ((tmp_path / "tb", SCORING_SEED_START), (tiny, 0)):
        out = tmp_path / f"{first}.jsonl"
        assert main(["scan", "--model", str(model), "--prompts", str(prompts), "--out", str(out), "--signals",
                     "guidance_norm", "--seeds", "2", "--steps", "2", "--no-progress"]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
        assert sorted(r["seed"] for r in rows) == [first, first + 1]


def test_a_labelled_fine_tune_given_as_lora_is_scanned_apart_from_its_label_seeds(tmp_path, capsys):
    """``--lora`` with ground truth counts as the testbed: its label seeds are kept apart whatever its base holds."""
    from memgeo.cli.scan import _scoring_start
    from memgeo.testbed.protocol import SCORING_SEED_START

    base, lora = tmp_path / "base", tmp_path / "lora"
    for folder, meta in ((base, {"prompts": []}), (lora, {"prompts": [], "ground_truth": {"seeds": [0, 1, 1000]}})):
        folder.mkdir()
        (folder / "testbed.json").write_text(json.dumps(meta))
    assert _scoring_start(str(base), None, 2) == 0
    with pytest.raises(ValueError, match="disjoint from the label seeds"):  # its label seeds include 1000
        _scoring_start(str(base), str(lora), 2)
    (lora / "testbed.json").write_text(json.dumps({"prompts": [], "ground_truth": {"seeds": 8}}))
    assert _scoring_start(str(base), str(lora), 2) == SCORING_SEED_START
