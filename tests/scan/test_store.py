"""The result store never loses, mixes or duplicates rows; every bad file is refused and left as it was."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from memgeo.scan import ResultStore, settings_digest

IDENT = {"name": "model-a", "fingerprint": "aaaa"}


def row(prompt, seed=0, signal="guidance_norm", digest="d0", score=1.0):
    return {"prompt": prompt, "seed": seed, "signal": signal, "digest": digest, "score": score}


def lines_of(path):
    return path.read_text().splitlines()


def test_a_new_store_starts_with_its_header(tmp_path):
    with ResultStore(tmp_path / "r.jsonl", model=IDENT) as store:
        assert store.append(row("a"))
        assert not store.append(row("a"))  # the same key twice is written once
    head = json.loads(lines_of(tmp_path / "r.jsonl")[0])
    assert head == {"format": "memgeo-results", "version": 2, "model": IDENT}
    assert len(lines_of(tmp_path / "r.jsonl")) == 2


@pytest.mark.parametrize("content", ["a dog on a sofa\nthe sea\n", '{"prompt": "x", "seed": 0}\n', "\x00\x01binary"])
def test_a_file_that_is_not_a_store_is_refused_and_left_as_it_was(tmp_path, content):
    path = tmp_path / "prompts.txt"
    path.write_text(content)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="is not a memgeo result store"):
        ResultStore(path, model=IDENT)
    assert path.read_bytes() == before


def test_a_directory_is_named_as_such(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        ResultStore(tmp_path, model=IDENT)


def test_a_store_of_another_model_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultStore(path, model=IDENT) as store:
        store.append(row("a"))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="holds results of the model 'model-a'"):
        ResultStore(path, model={"name": "model-a", "fingerprint": "bbbb"})
    assert path.read_bytes() == before


def test_a_torn_last_line_is_repaired_by_a_writer_and_skipped_by_a_reader(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultStore(path, model=IDENT) as store:
        store.append(row("a"))
    with open(path, "a") as fh:
        fh.write('{"prompt": "b", "se')
    assert set(ResultStore.read(path).rows) == {("a", 0, "guidance_norm", "d0")}
    assert path.read_text().endswith('"se')  # a reader changes nothing
    with ResultStore(path, model=IDENT) as store:
        assert set(store.rows) == {("a", 0, "guidance_norm", "d0")}
        store.append(row("b"))
    assert [json.loads(x)["prompt"] for x in lines_of(path)[1:]] == ["a", "b"]


def test_a_bad_line_in_the_middle_is_an_error_naming_it_and_nothing_is_deleted(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultStore(path, model=IDENT) as store:
        for p in "abc":
            store.append(row(p))
    lines = lines_of(path)
    path.write_text("\n".join([lines[0], lines[1], "{not json", lines[2], "", lines[3]]) + "\n")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="line 3 is not valid JSON"):
        ResultStore(path, model=IDENT)
    assert path.read_bytes() == before
    # a blank line in the middle is harmless: every row after it is kept
    path.write_text("\n".join([lines[0], lines[1], "", lines[2], lines[3]]) + "\n")
    assert len(ResultStore.read(path).rows) == 3
    path.write_text("\n".join([lines[0], '{"prompt": 1, "seed": 0}', lines[2]]) + "\n")
    with pytest.raises(ValueError, match="line 2 is not a result row"):
        ResultStore.read(path)


def test_rows_are_keyed_by_content(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultStore(path, model=IDENT) as store:
        store.append(row("a", digest=settings_digest({"weights": "sd1"}), score=1.0))
        store.append(row("a", digest=settings_digest({"weights": "sd2"}), score=2.0))
    got = ResultStore.read(path)
    assert got.get("a", 0, "guidance_norm", settings_digest({"weights": "sd2"}))["score"] == 2.0
    assert got.get("a", 0, "guidance_norm", settings_digest({"weights": "sd1"}))["score"] == 1.0
    assert settings_digest({"a": 1, "b": 2}) == settings_digest({"b": 2, "a": 1})


def test_a_second_writer_waits_for_the_first(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultStore(path, model=IDENT) as first:
        first.append(row("a"))
        with pytest.raises(TimeoutError, match="another process is still writing"):
            ResultStore(path, model=IDENT, timeout=0.2)
    with ResultStore(path, model=IDENT, timeout=0.2) as second:  # free again: it sees what the first wrote
        assert second.done("a", 0, "guidance_norm", "d0")


WORKER = textwrap.dedent("""
    import sys, time
    from memgeo.scan import ResultStore
    path, n = sys.argv[1], int(sys.argv[2])
    with ResultStore(path, model={"name": "fuzz", "fingerprint": "f"}) as store:
        for i in range(n):
            if not store.done(f"p{i}", 0, "s", "d"):
                time.sleep(0.002)  # the computation
                store.append({"prompt": f"p{i}", "seed": 0, "signal": "s", "digest": "d", "score": i * 0.5})
""")


def test_fuzz_kills_torn_lines_and_concurrent_writers_lose_or_duplicate_nothing(tmp_path):
    """Writers started together, some killed at random moments (SIGKILL) and some lines torn by
    hand; a last clean run must leave every row exactly once with its right value."""
    rng = random.Random(0)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    path, n = tmp_path / "fuzz.jsonl", 150
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for _ in range(4):
        procs = [subprocess.Popen([sys.executable, str(script), str(path), str(n)], env=env) for _ in range(3)]
        for p in procs:
            if rng.random() < 0.7:
                time.sleep(rng.uniform(0.3, 1.2))
                p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(timeout=120)
        if path.exists() and rng.random() < 0.5:
            with open(path, "a") as fh:  # a row torn in the middle of its write
                fh.write('{"prompt": "p')
    subprocess.run([sys.executable, str(script), str(path), str(n)], env=env, check=True, timeout=120)
    rows = [json.loads(x) for x in lines_of(path)[1:]]
    assert sorted(r["prompt"] for r in rows) == sorted(f"p{i}" for i in range(n))
    assert all(r["score"] == int(r["prompt"][1:]) * 0.5 for r in rows)
