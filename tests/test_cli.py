import math

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
