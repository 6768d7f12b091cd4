"""asc_search.results.plots: the three PNG plots, written atomically, also for runs with nothing to rank."""

from __future__ import annotations

from asc_search.results.plots import PLOT_FILES, make_plots
from asc_search.results.tables import analyse_run
from asc_search.search.runfolder import load_trials, run_budget


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plots_are_written_as_png(fake_run, tmp_path):
    run = fake_run(n=40)
    res = analyse_run(run, plots_dir=tmp_path / "plots")
    assert set(res.plots) == set(PLOT_FILES)
    for name, path in res.plots.items():
        assert path.name == PLOT_FILES[name] and _is_png(path)
    assert not [p for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")]  # no temp files left


def test_plots_of_a_run_without_completed_trials(fake_run, tmp_path):
    """Early-stopped, failed and rejected proposals only: no front, no best-so-far line, the plots still draw."""
    run = fake_run(n=30, completed=False)
    table = load_trials(run)
    assert not (table["status"] == "completed").any()
    plots = make_plots(table, tmp_path / "p", budget=run_budget(run))
    assert all(_is_png(p) for p in plots.values())
