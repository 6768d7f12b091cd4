"""``asc-search complexity``: a model's parameters, parameter bytes and MACs against the budget.

    asc-search complexity --preset NAME [--input-shape 1,1,256,65] [--dtype int8|float16|float32] [--json]
                          [--max-param-bytes N] [--max-macs N] [--layers] [--strict]
    asc-search complexity --config STUDENT.yaml ...   (a student architecture, as the search proposes it)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import DTYPE_BYTES, Budget
from ..errors import ConfigError, NotFoundError


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to ``sub``."""
    p = sub.add_parser(
        "complexity",
        help="count a model's parameters, parameter bytes and MACs (torchinfo) and check them against the budget",
        description=(
            "Count parameters, parameter memory and MACs by the DCASE organisers' convention (torchinfo on the "
            "real input shape, batch 1) and check them against a budget. Train-only parts such as the "
            "distillation projection head are not part of the deployed model and are not counted."
        ),
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", metavar="NAME", help="a named model (see --list)")
    what.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="a student architecture in YAML or JSON (StudentConfig keys; a top-level 'student:' key also works)",
    )
    what.add_argument("--list", action="store_true", help="list the presets and exit")
    p.add_argument(
        "--input-shape",
        metavar="B,C,F,T",
        help="input shape, batch 1 (default: the preset's, e.g. 1,1,256,65; 1,1,256,65 for --config)",
    )
    p.add_argument(
        "--dtype",
        metavar="DTYPE",
        help=f"parameter storage dtype: {' | '.join(DTYPE_BYTES)} (default: the preset's; int8 for --config)",
    )
    p.add_argument("--max-param-bytes", metavar="N", help="parameter memory limit in bytes (default 128000)")
    p.add_argument("--max-macs", metavar="N", help="MACs limit for one clip (default 30000000)")
    p.add_argument("--layers", action="store_true", help="also show each layer's parameters and MACs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when the model is over budget")
    p.set_defaults(func=run_complexity)


def _positive_int(value: str | None, option: str, default: int) -> int:
    if value is None:
        return default
    try:
        number = int(str(value).replace("_", "").replace(",", ""))
    except ValueError:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}")
    return number


def _load_student_config(path: Path) -> Any:
    from ..models.student import StudentConfig

    if not path.is_file():
        raise NotFoundError(f"student config file {str(path)!r} does not exist")
    from .._yaml import MAX_YAML_BYTES, load_yaml

    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; expected a student config of at most "
                          f"{MAX_YAML_BYTES:,} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the student config ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    else:
        data = load_yaml(text, str(path))
    if isinstance(data, dict) and set(data) == {"student"}:
        data = data["student"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of student config keys, got {type(data).__name__}")
    try:
        return StudentConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _print_list() -> int:
    from rich.table import Table

    from ..models.presets import PRESETS
    from ._render import output_console

    table = Table(title="model presets")
    for col in ("preset", "family", "input shape", "dtype", "description"):
        table.add_column(col)
    for p in PRESETS.values():
        table.add_row(p.name, p.family, "x".join(map(str, p.input_shape)), p.param_dtype, p.description)
    output_console().print(table)
    return 0


def run_complexity(args: argparse.Namespace) -> int:
    from ..complexity import TRAIN_ONLY_NOTE, check_budget, measure, parse_input_shape
    from ..models.presets import get_preset
    from ..models.student import build_student

    if args.list:
        return _print_list()
    if args.preset is not None:
        preset = get_preset(args.preset)
        label = f"preset {preset.name}"
        model = preset.factory()
        default_shape, default_dtype = preset.input_shape, preset.param_dtype
    else:
        config = _load_student_config(args.config)
        label = f"student {args.config}"
        model = build_student(config)
        default_shape, default_dtype = (1, config.in_channels, 256, 65), "int8"
    dtype = args.dtype if args.dtype is not None else default_dtype
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"unknown --dtype {dtype!r}; valid dtypes: {', '.join(DTYPE_BYTES)}")
    shape = parse_input_shape(args.input_shape) if args.input_shape is not None else default_shape
    budget = Budget(
        max_param_bytes=_positive_int(args.max_param_bytes, "--max-param-bytes", Budget().max_param_bytes),
        param_dtype=dtype,
        max_macs=_positive_int(args.max_macs, "--max-macs", Budget().max_macs),
    )
    complexity = measure(model, shape, dtype=dtype, layers=args.layers)
    report = check_budget(complexity, budget)

    if args.json:
        data = {"model": label, **report.to_dict()}
        if args.layers:
            data["layers"] = [
                {"layer": n, "type": t, "params": p, "macs": m} for n, t, p, m in complexity.layers
            ]
        print(json.dumps(data, indent=2))
        return 1 if args.strict and not report.passed else 0

    from rich.table import Table

    from ._render import output_console

    console = output_console()
    if args.layers:
        layers = Table(title=f"{label}: per layer")
        for col, justify in (("layer", "left"), ("type", "left"), ("params", "right"), ("MACs", "right")):
            layers.add_column(col, justify=justify)  # type: ignore[arg-type]
        for name, kind, params, macs in complexity.layers:
            layers.add_row(name, kind, f"{params:,}", f"{macs:,}")
        console.print(layers)
    table = Table(title=f"{label}, input {'x'.join(map(str, shape))}, parameters as {dtype}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("limit", justify="right")
    table.add_column("result")
    for name, value, limit, ok in report.rows:
        table.add_row(name, f"{value:,}", f"{limit:,}", "[green]pass[/green]" if ok else "[red]FAIL[/red]")
    console.print(table)
    verdict = "[green]within budget[/green]" if report.passed else "[red]over budget[/red]: " + "; ".join(report.failures)
    console.print(f"{verdict}")
    if complexity.deployed_param_bytes is not None:
        console.print(f"[dim]param_bytes: the DCASE count (parameters x {dtype} bytes). deployed_param_bytes: the "
                      f"weights of the {dtype} graph `asc-search export` writes (every BatchNorm folded into the conv "
                      "before it; an int8 graph keeps its biases as int32); both must fit.[/dim]")
    console.print(f"[dim]{TRAIN_ONLY_NOTE}[/dim]")
    return 1 if args.strict and not report.passed else 0
