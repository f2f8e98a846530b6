import math

import pytest

from memgeo.cli import main
from memgeo.experiments.demo import foundation_demo


def test_demo_rows_agree_with_closed_forms():
    rows = foundation_demo(n_probes=512)
    assert {r.mixture for r in rows} == {"triangle-d2", "full-d8", "diagonal-d64"}
    for r in rows:
        if r.method in ("exact", "lanczos", "closed form") or (r.method == "product" and "inf" in r.quantity):
            assert math.isclose(r.value, r.exact, rel_tol=1e-3, abs_tol=1e-8), r
        else:
            assert abs(r.value - r.exact) <= 5 * r.stderr + 1e-7 * (1 + abs(r.exact)), r


def test_demo_command_prints_table(capsys):
    assert main(["demo", "--probes", "32"]) == 0
    out = capsys.readouterr().out
    assert "Delta_1 log p" in out and "flux_antithetic" in out and "FLIPD" in out


@pytest.mark.parametrize("argv, message", [
    (["scan", "--prompts", "{p}", "--out", "{o}", "--fpr", "2", "--reference", "{p}"], "argument --fpr: expected a rate"),
    (["scan", "--prompts", "{p}", "--out", "{o}", "--guidance", "nan"], "argument --guidance: expected a finite number"),
    (["scan", "--prompts", "{p}", "--out", "{o}", "--seeds", "0"], "argument --seeds: expected a whole number >= 1"),
    (["scan", "--prompts", "{p}", "--out", "{o}", "--batch-size", "-3"], "argument --batch-size"),
    (["generate", "--prompt", " ", "--out", "{o}"], "argument --prompt: expected a non-empty prompt"),
    (["explain", "--prompt", "", "--out", "{o}"], "argument --prompt: expected a non-empty prompt"),
    (["localize", "--prompt", "a dog", "--out", "{o}", "--guidance", "inf"], "argument --guidance"),
    (["bench", "--steps", "0", "--out", "{o}"], "argument --steps"),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, argv, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        main([a.format(p=prompts, o=out) for a in argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()  # nothing was written: no store, no folder


def test_steering_without_reference_prompts_is_refused_before_the_model_loads(tmp_path, capsys):
    from memgeo.cli import main

    missing = tmp_path / "no_such_model"  # loading it would fail with a missing-folder error
    assert main(["generate", "--model", str(missing), "--prompt", "a cat", "--mitigate", "steer", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--reference-prompts" in err and "does not exist" not in err
