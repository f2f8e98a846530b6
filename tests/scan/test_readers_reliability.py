"""Prompt files: a byte-order mark, strict memorized fields, and binary files or folders named in the error."""

import json

import pytest

from memgeo.scan import read_prompts


@pytest.mark.parametrize("name, content", [
    ("p.txt", "\ufeffa dog on a sofa\nthe sea\n"),
    ("p.jsonl", '\ufeff{"caption": "a dog on a sofa"}\n{"caption": "the sea"}\n'),
    ("p.csv", "\ufeffCaption\na dog on a sofa\nthe sea\n"),
])
def test_a_byte_order_mark_is_stripped_in_every_format(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    assert [r.text for r in read_prompts(tmp_path / name)] == ["a dog on a sofa", "the sea"]


@pytest.mark.parametrize("value, label", [(0, 0), (1, 1), (False, 0), (True, 1), ("0", 0), ("false", 0), ("False", 0),
                                          ("no", 0), ("1", 1), ("true", 1), ("YES", 1)])
def test_memorized_fields_are_parsed_strictly(tmp_path, value, label):
    (tmp_path / "p.jsonl").write_text(json.dumps({"caption": "x", "memorized": value}) + "\n")
    assert read_prompts(tmp_path / "p.jsonl")[0].label == label
    (tmp_path / "p.csv").write_text(f"Caption,memorized\nx,{json.dumps(value).strip(chr(34))}\n")
    assert read_prompts(tmp_path / "p.csv")[0].label == label


@pytest.mark.parametrize("name, content, match", [
    ("p.jsonl", '{"caption": "x"}\n{"caption": "y", "memorized": "maybe"}\n', r"p.jsonl: line 2: 'memorized' must be one of"),
    ("p.jsonl", '{"caption": "y", "memorized": 2}\n', "line 1: 'memorized' must be one of"),
    ("p.csv", "Caption,memorized\nx,1\ny,perhaps\n", r"p.csv: row 3: 'memorized' must be one of"),
])
def test_a_bad_memorized_value_is_an_error_naming_the_line(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        read_prompts(tmp_path / name)


def test_binary_files_and_directories_are_named(tmp_path):
    (tmp_path / "img.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ValueError, match=r"img.txt' is a binary file"):
        read_prompts(tmp_path / "img.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt' is not UTF-8 text"):
        read_prompts(tmp_path / "latin.txt")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        read_prompts(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")

