"""The scan command: prompt readers, resumable results, parallel processes, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from memgeo.cli import main
from memgeo.scan import ResultStore, ScanConfig, ScanInterrupted, read_prompts, run_scan


def write_prompt_files(folder):
    (folder / "mem.jsonl").write_text(
        json.dumps({"caption": "a red bicycle by a blue door", "index": 1, "overfit_type": "MV"}) + "\n"
        + json.dumps({"caption": "poster: mountain lake, sunrise", "index": 2, "overfit_type": "TV"}) + "\n"
    )
    (folder / "ordinary.txt").write_text("a dog on a sofa\n\nthe city at night, rain\nan apple on a table\n")
    (folder / "more.csv").write_text("id;Caption\n1;a boat; at sea\n2;\"a cat, sleeping\"\n".replace("a boat; at sea", "\"a boat; at sea\""))
    return [folder / "mem.jsonl", folder / "ordinary.txt", folder / "more.csv"]


def test_readers_accept_the_community_formats(tmp_path):
    mem, txt, csv = write_prompt_files(tmp_path)
    m = read_prompts(mem)
    assert [r.text for r in m] == ["a red bicycle by a blue door", "poster: mountain lake, sunrise"]
    assert [r.label for r in m] == [1, 1] and m[1].meta["overfit_type"] == "TV"
    assert [r.text for r in read_prompts(txt)] == ["a dog on a sofa", "the city at night, rain", "an apple on a table"]
    assert [r.text for r in read_prompts(csv)] == ["a boat; at sea", "a cat, sleeping"]
    (tmp_path / "comma.csv").write_text("Caption,score\nhello world,1\n")
    assert read_prompts(tmp_path / "comma.csv")[0].text == "hello world"


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.jsonl", '{"caption": "ok"}\n{"caption": \n', "line 2 is not valid JSON"),
        ("nocap.jsonl", '{"text2": "x"}\n', "no 'caption'"),
        ("nocol.csv", "a,b\n1,2\n", "needs a 'Caption' column"),
        ("empty.txt", "\n\n", "holds no prompts"),
    ],
)
def test_malformed_prompt_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        read_prompts(tmp_path / name)


class Interrupting:
    """Wraps a score model and raises KeyboardInterrupt after ``limit`` model calls."""

    def __init__(self, model, limit):
        self.model, self.limit, self.calls = model, limit, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def eps_pair(self, x, t, cond):
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt
        return self.model.eps_pair(x, t, cond)


@pytest.fixture(scope="module")
def model(tiny_pipelines):
    from memgeo.models import DiffusersScoreModel

    return DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])


@pytest.fixture(scope="module")
def tiny_pipelines(tmp_path_factory):
    from memgeo.models import build_tiny_pipeline

    return {"epsilon": build_tiny_pipeline(tmp_path_factory.mktemp("scan") / "eps", "epsilon")}


def result_rows(path):
    """The result rows of a store file (its header line left out)."""
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "memgeo-results"
    return [json.loads(x) for x in lines[1:] if x.strip()]


def row_keys(rows):
    return [(r["prompt"], r["seed"], r["signal"], r["digest"]) for r in rows]


def test_interrupted_scan_resumes_without_loss_or_duplicates(tmp_path, model):
    files = write_prompt_files(tmp_path)
    records = [r for f in files for r in read_prompts(f)]
    cfg = ScanConfig(signals=("guidance_norm", "anisotropy"), seeds=(0, 1), n_steps=10)
    ref = run_scan(model, records, tmp_path / "ref.jsonl", cfg, progress=False)

    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt) as stop:
        run_scan(Interrupting(model, limit=9), records, out, cfg, progress=False, batch_size=1)  # 1 + 2 calls per prompt
    assert isinstance(stop.value, ScanInterrupted) and stop.value.asked == len(records) * 2 * 2
    partial = result_rows(out)
    assert 0 < len(partial) == stop.value.saved < len(records) * 2 * 2
    with open(out, "a") as fh:  # a kill in the middle of a write leaves a cut-off line
        fh.write('{"prompt": "a dog on a sofa", "seed": 1, "sig')
    result = run_scan(model, records, out, cfg, progress=False)
    keys = row_keys(result_rows(out))
    assert len(keys) == len(set(keys)) == len(records) * 2 * 2
    for name in cfg.signals:
        np.testing.assert_allclose(result.scores(name), ref.scores(name), rtol=1e-5)


def row(prompt, seed=0, signal="guidance_norm", digest="d0", **kw):
    return {"prompt": prompt, "seed": seed, "signal": signal, "digest": digest, "score": 1.0, **kw}


def test_result_store_merges_shards_without_duplicates(tmp_path):
    out = tmp_path / "r.jsonl"
    ident = {"name": "m", "fingerprint": "f"}
    with ResultStore(out, model=ident, rank=0) as a, ResultStore(out, model=ident, rank=1) as b:
        a.append(row("k0"))
        b.append(row("k1"))
        b.append(row("k0"))  # also done by rank 0, which b cannot see: the merge keeps one
    with ResultStore(out, model=ident) as main:
        main.merge_shards()
    assert sorted(r["prompt"] for r in result_rows(out)) == ["k0", "k1"]
    assert not list(tmp_path.glob("r.jsonl.part-*"))


def test_cli_scan_with_labels_prints_metrics_and_roc(tmp_path, tiny_pipelines, capsys):
    files = write_prompt_files(tmp_path)
    out = tmp_path / "res.jsonl"
    code = main(["scan", "--model", str(tiny_pipelines["epsilon"]), "--prompts", *map(str, files),
                 "--labels", "mem", "nmem", "nmem", "--seeds", "2", "--steps", "10", "--out", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "AUROC" in text and "TPR@1%" in text and "strict" in text and "anisotropy" in text
    assert out.with_suffix(".roc.png").stat().st_size > 1000
    rows = result_rows(out)
    assert len(rows) == 7 * 2 * 3
    assert {r["n_jvps"] for r in rows if r["signal"] == "sharpness"} == {1}
    assert {r["n_evals"] for r in rows if r["signal"] == "anisotropy"} == {4}


@pytest.mark.parametrize(
    "args, match",
    [
        (["--model", "/nonexistent/model"], "does not exist"),
        (["--signals", "telepathy"], "invalid choice"),
        (["--labels", "mem"], "one label per --prompts file"),
    ],
)
def test_cli_scan_errors(tmp_path, tiny_pipelines, capsys, args, match):
    files = write_prompt_files(tmp_path)
    base = {"--model": str(tiny_pipelines["epsilon"]), "--prompts": [str(files[0]), str(files[1])], "--out": str(tmp_path / "o.jsonl")}
    argv = ["scan"]
    for k, v in base.items():
        if k not in args:
            argv += [k, *(v if isinstance(v, list) else [v])]
    argv += args
    try:
        code = main(argv)
    except SystemExit as e:  # argparse rejects unknown choices itself
        code = e.code
    assert code == 2
    assert match in capsys.readouterr().err


def test_accelerate_two_processes_match_one(tmp_path, tiny_pipelines, model):
    files = write_prompt_files(tmp_path)
    out = tmp_path / "par.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "memgeo", "scan",
           "--model", str(tiny_pipelines["epsilon"]), "--prompts", *map(str, files), "--seeds", "3", "--steps", "10",
           "--signals", "guidance_norm", "anisotropy", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = result_rows(out)
    keys = row_keys(rows)
    assert len(keys) == len(set(keys)) == 7 * 3 * 2 and not list(tmp_path.glob("par.jsonl.part-*"))
    records = [r for f in files for r in read_prompts(f)]
    single = run_scan(model, records, tmp_path / "single.jsonl", ScanConfig(("guidance_norm", "anisotropy"), (0, 1, 2), 10), progress=False)
    for r in rows:
        want = single.store.get(r["prompt"], r["seed"], r["signal"], r["digest"])
        assert r["score"] == pytest.approx(want["score"], rel=1e-4)
