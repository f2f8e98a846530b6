"""The repository stays small: no tracked file over 20 MB, the tree under 80 MB, and the only tracked training
checkpoints are compact (weights only, half precision) rolling checkpoints of protocol runs still training."""

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 20 * 1024 * 1024

MAX_TREE_BYTES = 80 * 1024 * 1024


def tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_is_over_20_mb():
    big = [f"{p.relative_to(REPO)} ({p.stat().st_size / 2**20:.1f} MB)" for p in tracked()
           if p.is_file() and p.stat().st_size > MAX_BYTES]
    assert not big, f"tracked files over 20 MB: {big}"


def test_the_tree_is_under_80_mb():
    """Counted without the rolling checkpoints of protocol runs still training (13 MB each), which leave with their run."""
    total = sum(p.stat().st_size for p in tracked()
                if p.is_file() and not (p.relative_to(REPO).parts[0] == "runs" and "checkpoint" in p.parts))
    assert total < MAX_TREE_BYTES, f"the tracked tree holds {total / 2**20:.1f} MB"


def test_tracked_checkpoints_are_compact_rolling_checkpoints_of_running_protocol_runs():
    for p in tracked():
        parts = p.relative_to(REPO).parts
        if "checkpoint" not in parts or parts[0] != "runs":
            continue
        run = parts[1]
        assert p.name != "optimizer.safetensors", f"{p}: a tracked checkpoint keeps weights only"
        if run.startswith("sd-bench-") and p.suffix == ".safetensors" and p.name not in ("rng.safetensors", "gap_window.safetensors"):
            from safetensors.torch import load_file

            dtypes = {str(v.dtype) for v in load_file(p).values() if v.is_floating_point()}
            assert dtypes == {"torch.float16"}, f"{p}: a protocol run's checkpoint is half precision, got {dtypes}"
        assert run.startswith("sd-bench-"), f"{p}: a checkpoint of a run that is not a protocol run"
        if p.name == "state.json":
            state = json.loads(p.read_text())
            assert state["step"] < state.get("lr_schedule", {}).get("steps", float("inf")), \
                f"{p}: the run is done ({state['step']} steps), so its checkpoint leaves the tree"
