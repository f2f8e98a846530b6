"""Reference calibration and the scan report."""

import csv

import numpy as np
import pytest

from memgeo.cli import main
from memgeo.scan import calibrate


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.2])
def test_calibrated_threshold_flags_at_most_fpr_of_the_reference(fpr):
    ref = np.random.default_rng(0).normal(size=500)
    cal = calibrate(ref, fpr=fpr)
    assert cal.flags(ref).mean() <= fpr
    assert cal.flags(ref).mean() >= fpr - 1 / len(ref)  # and as many as it can
    # the FPR a score is flagged at: the fraction of the reference at least as high
    s = np.array([-10.0, 0.0, cal.threshold, 10.0])
    np.testing.assert_allclose(cal.reference_fpr(s), [(ref >= v).mean() for v in s])
    assert cal.flags([np.nan]).tolist() == [False]


def test_calibration_errors_and_small_references():
    with pytest.raises(ValueError, match="fpr must lie in"):
        calibrate([1.0, 2.0], fpr=1.5)
    with pytest.raises(ValueError, match="at least one finite score"):
        calibrate([np.nan])
    with pytest.warns(UserWarning, match="10 reference prompts cannot resolve an FPR of 0.01"):
        cal = calibrate(np.arange(10.0), fpr=0.01)
    assert cal.threshold == 9.0 and not cal.flags([9.0])[0] and cal.flags([9.5])[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from memgeo.models import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("report") / "eps", "epsilon")


def test_scan_with_a_reference_prints_a_ranked_flagged_table_and_writes_the_report(tmp_path, tiny, capsys):
    scanned = tmp_path / "scan.txt"
    scanned.write_text("\n".join(f"a scanned prompt number {i}" for i in range(25)) + "\n")
    reference = tmp_path / "ref.txt"
    reference.write_text("\n".join(f"an ordinary reference prompt {i}" for i in range(30)) + "\n")
    out = tmp_path / "r.jsonl"
    argv = ["scan", "--model", str(tiny), "--prompts", str(scanned), "--reference", str(reference), "--fpr", "0.1",
            "--signals", "guidance_norm", "anisotropy", "--rank-by", "anisotropy", "--seeds", "2", "--steps", "4",
            "--out", str(out), "--report", str(tmp_path / "rep.csv"), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "thresholds from 30 reference prompts at FPR 0.1" in text
    assert "prompts ranked by anisotropy" in text and "(5 more in the report file)" in text
    with open(tmp_path / "rep.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 25 and [int(r["rank"]) for r in rows] == list(range(1, 26))
    means = [float(r["mean"]) for r in rows]
    assert means == sorted(means, reverse=True)
    assert {r["flagged"] for r in rows} <= {"True", "False"} and all(0 <= float(r["fpr"]) <= 1 for r in rows)
    assert (tmp_path / "r.hist.png").stat().st_size > 1000
    n_rows = len(out.read_text().splitlines())
    assert main(argv) == 0  # the reference is cached like any scan: nothing is recomputed
    assert len(out.read_text().splitlines()) == n_rows == 1 + (25 + 30) * 2 * 2
    assert main(argv + ["--rank-by", "sharpness"]) == 2
