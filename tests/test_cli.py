"""asc_search.cli: library errors name parameters; the CLI shows the option that sets each one."""

from __future__ import annotations

import argparse

from asc_search.cli import build_parser, cli_message, main
from asc_search.errors import ConfigError, NotFoundError


def _leaf(*command: str) -> argparse.ArgumentParser:
    args = build_parser().parse_args([*command])
    return args.cli_parser


def test_parameters_become_the_options_that_set_them():
    search = _leaf("search", "cache", "--space", "s.yaml")
    err = ConfigError("resume needs name: the run to resume (a folder under results_dir)",
                      params=("resume", "name", "results_dir"))
    # the first mention of each parameter only ("the run to resume" stays prose)
    assert cli_message(err, search) == "--resume needs --name: the run to resume (a folder under --results-dir)"
    err = ConfigError("/data/num_samples/x.yaml: num_samples 5 differs", params=("num_samples",))
    assert cli_message(err, search) == "/data/num_samples/x.yaml: --num-samples 5 differs"  # not inside a path
    export = _leaf("export", "run", "--out", "o")
    err = NotFoundError("no completed trial; name one with trial_id, or give cache_dir", params=("trial_id", "cache_dir"))
    assert cli_message(err, export) == "no completed trial; name one with --trial, or give --cache"
    assert cli_message(ConfigError("plain message"), export) == "plain message"
    assert cli_message(ConfigError("top must be positive", params=("top",)), export) == "top must be positive"
    assert cli_message(err, None) == str(err)


def test_a_library_error_reaches_the_user_with_the_flag(tmp_path, capsys):
    assert main(["search", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == ("asc-search search: error: --resume needs --name: the run to resume (a folder under "
                   "--results-dir)\n")
