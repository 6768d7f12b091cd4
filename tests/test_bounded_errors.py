"""Error messages quote bounded values, and a search file cannot expand without bound: YAML aliases, duplicate
keys, self-containing structures and oversized files are refused with one short line (issue 13, item 4)."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from asc_search._yaml import MAX_YAML_VALUES, load_yaml
from asc_search.cli import main
from asc_search.errors import ConfigError, bound_message, quote
from asc_search.search.space import parse_space

ROOT = Path(__file__).resolve().parents[1]
QUICK = (ROOT / "search_spaces" / "quick.yaml").read_text()
#: quick.yaml without its description (the tests give their own)
BASE = "".join(line for line in QUICK.splitlines(keepends=True) if not line.startswith("description:"))


def _laughs(levels: int, width: int = 9) -> str:
    """A ``description:`` mapping of ``levels`` levels of aliases, each ``width`` times the one below (the search
    file of the issue: 3 KB that expand to 9**levels values)."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for k in range(1, levels + 1):
        lines.append(f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * width)}]")
    return "description:\n" + "\n".join("  " + line for line in lines) + "\n"


def test_quote_bounds_long_strings_and_huge_nested_values():
    assert quote("abc") == "'abc'" and quote(3) == "3"
    long = quote("x" * 100_000)
    assert len(long) < 260 and long.endswith("(100,000 characters)")
    nested = [1]
    for _ in range(30):  # 2**30 leaves when expanded: quote must not build that repr
        nested = [nested, nested]
    t0 = time.perf_counter()
    text = quote(nested)
    assert len(text) <= 210 and time.perf_counter() - t0 < 1.0


def test_bound_message_is_one_short_line():
    text = bound_message("first\nsecond\n" + "y" * 10_000)
    assert "\n" not in text and text.startswith("first | second | yyy") and len(text) < 2100


def test_nested_aliases_are_refused_before_they_expand():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        parse_space(BASE + _laughs(9), source="bomb.yaml")
    message = str(err.value)
    assert message.startswith("bomb.yaml: expands to more than 100,000 values"), message
    assert len(message) < 300 and time.perf_counter() - t0 < 2.0
    # nine levels of 9x aliases are 387 M values: expanding them took > 4 GB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_a_large_value_below_the_limit_is_quoted_briefly():
    assert MAX_YAML_VALUES > 2 * 9**4  # 3 levels: 6,561 strings under description, read but not quoted in full
    with pytest.raises(ConfigError) as err:
        parse_space(BASE + _laughs(3), source="s.yaml")
    message = str(err.value)
    assert message.startswith("s.yaml: description: must be a string, got {'a0': ['lol'"), message
    assert len(message) < 300


def test_description_of_the_wrong_type_is_quoted_briefly():
    text = BASE + "description: [" + ", ".join(["word"] * 5000) + "]\n"
    with pytest.raises(ConfigError) as err:
        parse_space(text, source="s.yaml")
    message = str(err.value)
    assert message.startswith("s.yaml: description: must be a string, got ['word', 'word'") and len(message) < 300


def test_duplicate_keys_are_refused_with_both_lines():
    text = "profile: quick\nsearch:\n  seed: 1\n  num_samples: 3\n  seed: 2\n"
    with pytest.raises(ConfigError, match=r"^s\.yaml: line 5: key 'seed' appears again \(first on line 3\)"):
        load_yaml(text, "s.yaml")
    assert load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  x: 2\n", "m.yaml") == {"base": {"x": 1}, "other": {"x": 2}}


def test_a_structure_that_contains_itself_is_refused():
    with pytest.raises(ConfigError, match="contains itself"):
        load_yaml("a: &a [1, *a]\n", "loop.yaml")


def test_python_tags_are_never_constructed():
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml("x: !!python/object/apply:os.system ['echo pwned']\n", "evil.yaml")


def test_cli_refuses_a_bomb_and_an_oversized_file_in_one_line(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BASE + _laughs(9))
    big = tmp_path / "big.yaml"
    big.write_text(QUICK + "#" * (2 << 20) + "\n")
    for path, expected in ((bomb, "expands to more than"), (big, "expected a search file (YAML) of at most")):
        assert main(["search", str(tmp_path / "cache"), "--space", str(path), "--results-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err and len(err) < 400, err
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # nothing written


def test_a_library_that_fails_to_import_is_named_in_one_line():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; from asc_search.cli import main; "
            "sys.exit(main(['complexity', '--preset', 'teacher_quick']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("asc-search complexity: error: cannot import torch (") and done.stderr.count("\n") == 1
    assert "unknown key" not in done.stderr and "Traceback" not in done.stderr
