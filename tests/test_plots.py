"""asc_search.results.plots: the three PNG plots, written atomically, also for runs with nothing to rank."""

from __future__ import annotations

from asc_search.results.analysis import analyse_run
from asc_search.results.plots import PLOT_FILES, make_plots
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


def test_accuracy_over_trials_is_drawn_by_trial_id_with_a_chance_line(fake_run):
    import json

    from asc_search.results.plots import accuracy_over_trials_figure, n_classes_of

    table = load_trials(fake_run(n=30))
    trained = table[table["val_macro_accuracy"].notna()]
    ax = accuracy_over_trials_figure(table, n_classes=10).axes[0]
    xs = sorted(x for c in ax.collections for x, y in c.get_offsets() if y > 0)
    assert xs == sorted(trained["trial_id"].astype(float))  # trial 0 is at x = 0, not 1
    assert ax.xaxis.get_label().get_text().startswith("trial_id")
    chance = [line for line in ax.lines if line.get_label() == "chance (1/10)"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [0.1, 0.1]
    table["config"] = json.dumps({"student": {"n_classes": 4}})
    assert n_classes_of(table) == 4
    labels = [line.get_label() for line in accuracy_over_trials_figure(table).axes[0].lines]
    assert "chance (1/4)" in labels


def test_the_within_budget_box_starts_at_zero_on_linear_axes(fake_run):
    from asc_search.results.plots import budget_plane_figure

    run = fake_run(n=40)
    table = load_trials(run)
    small = table[(table["param_bytes"] < 120_000) & (table["param_bytes"] > 10_000)]  # < 30x spread: linear axes
    assert small["param_bytes"].max() / small["param_bytes"].min() < 30
    ax = budget_plane_figure(small, run_budget(run)).axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0 and ax.get_ylim()[0] == 0
    box = [c for c in ax.collections if c.get_label() == "within budget"]
    corners = box[0].get_paths()[0].vertices
    assert corners[:, 0].min() == 0 and corners[:, 1].min() == 0
    assert corners[:, 0].max() == 128.0 and corners[:, 1].max() == 30.0  # kB and M MACs: the budget
    wide = budget_plane_figure(table, run_budget(run)).axes[0]  # rejected proposals far out: log axes
    if wide.get_xscale() == "log":
        assert wide.get_xlim()[0] > 0


def test_plot_files_get_ordinary_permissions(fake_run, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        plots = make_plots(load_trials(fake_run(n=20)), tmp_path / "p")
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in plots.values()} == {"0o644"}  # not mkstemp's 0600
