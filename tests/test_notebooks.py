"""Every paper-figure notebook runs top to bottom in its fast setting, and its .ipynb pair is in sync."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9]*.py"))
FIGURES = {
    "01_p_laplace_2d": ["fig1_p_laplace_maps.png", "fig1_p_laplace_estimates.png"],
    "02_isotropy_anisotropy": ["fig2_mixture_regimes.png", "fig2_alignment_and_testbed.png", "fig2_testbed_anisotropy_index.png"],
    "03_trajectory": ["fig3_trajectory.png", "fig3_branch_diagnostic.png"],
    "04_curvature_lid": ["fig4_curvature_lid.png"],
    "05_detection_summary": ["fig5_roc_testbed.png", "fig5_rate_vs_duplication.png"],
    "06_explain_localize_prevent": ["fig6_token_attribution.png", "fig6_localization.png", "fig6_training_tradeoff.png"],
}


def test_every_notebook_is_listed():
    assert {p.stem for p in NOTEBOOKS} == set(FIGURES)
    readme = (NOTEBOOKS[0].parent / "README.md").read_text()
    for p in NOTEBOOKS:
        assert p.stem in readme


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_pair_in_sync(path):
    import jupytext

    py, ipynb = jupytext.read(path), jupytext.read(path.with_suffix(".ipynb"))
    assert [c.source for c in py.cells] == [c.source for c in ipynb.cells], f"run: jupytext --sync {path}"


#: Notebooks whose fast setting still takes minutes on 2 cores (every signal on the testbed): run by make test-slow.
SLOW = {"05_detection_summary"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW else p for p in NOTEBOOKS],
                         ids=lambda p: p.stem)
def test_notebook_executes_in_fast_setting(path, tmp_path, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    monkeypatch.setenv("MEMGEO_FAST", "1")
    monkeypatch.setenv("MEMGEO_FIGURE_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel shares the cores with the other test worker
    nb = jupytext.read(path)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for name in FIGURES[path.stem]:
        assert (tmp_path / name).stat().st_size > 5000, name
    if path.stem == "05_detection_summary":  # the leaderboard is written beside its figure
        table = (tmp_path / "fig5_leaderboard.md").read_text()
        assert "| signal | AUROC" in table and "kappa_delta" in table
