"""The repository stays small: no tracked file over 20 MB, and the only tracked training checkpoints are compact
(weights only, half precision) rolling checkpoints of running protocol runs, or the older runs listed as still to
leave the tree (weights only since their optimizer states left it)."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 20 * 1024 * 1024

#: Finished runs whose checkpoints (weights and generator state; their optimizer states already left) are still
#: tracked; each leaves the tree in turn (runs/README.md names the commit that keeps it). None may be added.
LEGACY_RUNS = {"sd", "sd-ladder", "sd-ladder-cond-only", "sd-ladder-graded", "sd-ladder-local", "sd-ladder-shared"}


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


def test_tracked_checkpoints_are_compact_or_listed_legacy_runs():
    for p in tracked():
        parts = p.relative_to(REPO).parts
        if "checkpoint" not in parts or parts[0] != "runs":
            continue
        run = parts[1]
        assert p.name != "optimizer.safetensors", f"{p}: a tracked checkpoint keeps weights only"
        if run.startswith("sd-bench-") and p.suffix == ".safetensors" and p.name != "rng.safetensors":
            from safetensors.torch import load_file

            dtypes = {str(v.dtype) for v in load_file(p).values() if v.is_floating_point()}
            assert dtypes == {"torch.float16"}, f"{p}: a protocol run's checkpoint is half precision, got {dtypes}"
        assert run.startswith("sd-bench-") or run in LEGACY_RUNS, \
            f"{p}: a checkpoint of a run that is neither a protocol run nor listed"
