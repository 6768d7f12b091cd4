"""``asc-search results | dashboard | export | predict``: look at a search run and use its best student."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, bound_message
from ._args import port, positive_int
from ._render import output_console

_RUN_HELP = "a run name under --results-dir (default ./results) or the path of a run folder"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``results``, ``dashboard``, ``export`` and ``predict``."""
    p = sub.add_parser(
        "results",
        help="leaderboard, Pareto front and plots of a search run",
        description="Leaderboard of the completed trials, the Pareto front over validation macro accuracy (max), "
        "MACs and parameter bytes (min), and PNG plots written to RUN/plots (or --plots-dir).",
    )
    p.add_argument("run", metavar="NAME|PATH", help=_RUN_HELP)
    p.add_argument("--results-dir", default=None, help="folder holding named runs (default: ./results)")
    p.add_argument("--top", type=positive_int, default=10, help="leaderboard rows to show (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plots-dir", default=None, help="where to write the PNG plots (default: RUN/plots)")
    p.add_argument("--no-plots", action="store_true", help="do not write plots")
    p.add_argument("--all", action="store_true",
                   help="also list early-stopped and failed trials (unranked, after the ranked completed ones)")
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard on a run's study at 127.0.0.1",
        description="Serve optuna-dashboard on the run's Optuna study (RUN/study.db) until Ctrl-C.",
    )
    p.add_argument("run", metavar="NAME|PATH", help=_RUN_HELP)
    p.add_argument("--results-dir", default=None, help="folder holding named runs (default: ./results)")
    p.add_argument("--port", type=port, default=8080, help="port to listen on (default 8080; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser(
        "export",
        help="export the best feasible student of a run (config, weights, ONNX, test scores, report)",
        description="Take the best completed trial on validation within the run's budget (or --trial ID), "
        "optionally retrain it from scratch on all of train, deploy it at the budget's param_dtype (int8: static "
        "quantisation calibrated on training clips, with QAT when --qat-epochs asks; float16; float32), check the "
        "weight bytes measured from the deployed graph against the budget, score the deployed graph once on the "
        "test split with onnxruntime beside the float32 model, and write student.yaml, student.safetensors, "
        "student.onnx (the deployed graph), student.fp32.onnx (the float32 reference) and report.md to --out.",
    )
    p.add_argument("run", metavar="NAME|PATH", help=_RUN_HELP)
    p.add_argument("--out", required=True, help="export folder to create")
    p.add_argument("--results-dir", default=None, help="folder holding named runs (default: ./results)")
    p.add_argument("--trial", dest="trial_id", metavar="ID", default=None,
                   help="export this trial (its trial_id, the Optuna trial number) instead of the best one")
    p.add_argument("--retrain", action="store_true", help="retrain from scratch on train + validation")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--cache", dest="cache_dir", metavar="DIR", default=None,
                   help="feature cache to score on (default: the one the run used)")
    p.add_argument("--teacher-cache", dest="teacher_cache_dir", metavar="DIR", default=None,
                   help="teacher cache for --retrain (default: the run's)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="device for retraining, QAT and float32 scoring (the deployed graph runs on the CPU)")
    p.add_argument("--qat-epochs", dest="qat_epochs", metavar="N|auto", default="auto",
                   help="int8 only: epochs of quantisation-aware fine-tuning; auto (default): only when post-training "
                   "quantisation loses more than 1 point of validation macro accuracy, then 10%% of the trial's "
                   "epochs (at least 2), keeping the better model; 0: never")
    p.add_argument("--seeds", metavar="N", type=positive_int, default=None,
                   help="also retrain the trial's configuration N times (seeds from its own) on the search's train "
                   "part and report test macro accuracy as mean ± sd; the exported weights stay the search's")
    p.add_argument("--threads", metavar="N", type=positive_int, default=None,
                   help="torch threads for --seeds runs (default: all cores)")
    p.add_argument("--per-device", action="store_true",
                   help="also fine-tune and export a copy of the student per training device (DCASE 2025 device "
                   "track) into OUT/devices/<device>/; other devices use the general model")
    p.add_argument("--min-device-clips", type=int, default=None, metavar="N",
                   help="training clips a device needs for its own model (default 50)")
    p.add_argument("--device-epochs", type=int, default=None, metavar="N",
                   help="fine-tuning epochs of a device model (default: the trial's)")
    p.add_argument("--dir-folder", default=None, metavar="DIR",
                   help="the run's WAV device impulse responses, when their folder moved (retrain, QAT, --per-device)")
    p.add_argument("--json", action="store_true", help="print the export summary as JSON")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "predict",
        help="classify WAV files with an exported student",
        description="Run an exported student on WAV files (any sample rate, mono or stereo: stereo is averaged "
        "to mono; audio is resampled to the export's feature profile). A file longer than the clip length is "
        "cut into clip-length windows whose probabilities are averaged; a shorter one is zero-padded. A file that "
        "cannot be read gets an error line (and an error in --csv) while the others are classified; the exit "
        "code is then 2.",
    )
    p.add_argument("export_dir", metavar="EXPORT_DIR", help="a folder written by `asc-search export`")
    p.add_argument("inputs", metavar="AUDIO_OR_DIR", nargs="+", help="WAV files or folders (searched for *.wav)")
    p.add_argument("--csv", default=None, metavar="FILE", help="write the predictions to FILE as CSV")
    p.add_argument("--device-id", default=None, metavar="ID",
                   help="the recording device of every file: an export with device models (export --per-device) "
                   "uses that device's model (default: read from TAU file names ...-<device>.wav; unknown devices "
                   "use the general model)")
    p.add_argument("--precision", default="deployed", choices=("deployed", "fp32"),
                   help="deployed (default): the export's student.onnx at the budget's precision, with onnxruntime "
                   "on the CPU; fp32: the float32 reference model (torch, on --device)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device for --precision fp32")
    p.set_defaults(func=_cmd_predict)


def _console() -> Console:
    """stdout console; when piped or captured, wide enough that the leaderboard's columns are not cut."""
    return output_console()


def _fmt(value: Any, kind: str = "") -> str:
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "acc":
        return f"{float(value):.4f}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# ------------------------------------------------------------------------------------------------ results


def _cmd_results(args: argparse.Namespace) -> int:
    from ..results.analysis import analyse_run
    from ..results.tables import strip_prefix
    from ..search.runfolder import STATUSES, Status

    res = analyse_run(
        args.run, results_dir=args.results_dir, top=args.top, plots_dir=args.plots_dir, plots=not args.no_plots,
        include_stopped=args.all,
    )
    if args.json:
        json.dump(res.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    console = _console()
    counts = res.counts
    console.print(f"[bold]Run[/bold] {res.name}  ({res.run_dir})")
    shown = [s for s in STATUSES if s != Status.RUNNING or counts[s]]
    console.print("proposals: " + ", ".join(f"{s}={counts[s]}" for s in shown) + f"  (total {counts['total']})")
    if res.budget:
        b = res.budget
        console.print(f"budget: {b.max_param_bytes:,} bytes at {b.param_dtype}, {b.max_macs:,} MACs")

    n_ranked = int((res.board["rank"] > 0).sum())
    board = Table(title=f"Leaderboard: top {n_ranked} of {counts.get('completed', 0)} completed trials "
                  "(validation split)" + (", then early-stopped and failed ones" if args.all else ""))
    for col, just in (("rank", "right"), ("trial", "left"), ("status", "left"), ("reference", "left"),
                      ("params", "right"), ("bytes", "right"),
                      ("MACs", "right"), ("val macro acc", "right"), ("val log loss", "right"), ("epochs", "right")):
        board.add_column(col, justify=just)
    deployed = "val_macro_accuracy_deployed" in res.board and res.board["val_macro_accuracy_deployed"].notna().any()
    if deployed:
        board.add_column("val macro acc (deployed)", justify="right")
    for col in res.distill:
        board.add_column(strip_prefix(col), justify="right")
    for _, row in res.board.iterrows():
        board.add_row(
            str(row["rank"]) if row["rank"] > 0 else "-", str(row["trial_id"]), str(row["status"]),
            str(row["reference"]) if row.get("kind") == "reference" else "", _fmt(row["params"], "int"), _fmt(row["param_bytes"], "int"),
            _fmt(row["macs"], "int"), _fmt(row["val_macro_accuracy"], "acc"), _fmt(row["val_log_loss"], "acc"),
            _fmt(row["epochs"], "int"), *([_fmt(row["val_macro_accuracy_deployed"], "acc")] if deployed else []),
            *[_fmt(row[c]) for c in res.distill],
        )
    console.print(board)
    if res.margin:
        console.print(f"winner (rank 1, references included): {res.margin['text']}")
    for message in res.warnings:
        console.print(f"[yellow]warning:[/yellow] {message}")

    front = Table(title=f"Pareto front ({len(res.front)}): accuracy max, MACs & bytes min")
    for col in ("trial", "val macro acc", "MACs", "bytes", "params"):
        front.add_column(col, justify="left" if col == "trial" else "right")
    for _, row in res.front.iterrows():
        front.add_row(str(row["trial_id"]), _fmt(row["val_macro_accuracy"], "acc"), _fmt(row["macs"], "int"),
                      _fmt(row["param_bytes"], "int"), _fmt(row["params"], "int"))
    console.print(front)
    for name, path in res.plots.items():
        console.print(f"plot {name}: {path}")
    return 0


# ------------------------------------------------------------------------------------------------ dashboard


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from ..results.dashboard import dashboard_server

    server, url, names = dashboard_server(args.run, results_dir=args.results_dir, host=args.host, port=args.port)
    console = _console()
    console.print(f"optuna-dashboard for study {', '.join(names)} at [bold]{url}[/bold]  (Ctrl-C stops it)")
    port = server.server_port
    if args.host in ("127.0.0.1", "localhost", "::1"):
        console.print(f"from another machine: ssh -N -L {port}:127.0.0.1:{port} USER@THIS_HOST, then open "
                      f"http://127.0.0.1:{port}/dashboard/", style="dim", soft_wrap=True)
    else:
        console.print(f"[yellow]warning: --host {args.host} serves the dashboard, which has no login and can edit "
                      "notes and delete studies, to every machine that reaches this one; prefer the default "
                      "127.0.0.1 and an SSH tunnel[/yellow]", soft_wrap=True)
    import signal

    def _stop(_signum, _frame):  # SIGTERM (e.g. from a process manager) stops it like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("dashboard stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return 0


# ------------------------------------------------------------------------------------------------ export


def _cmd_export(args: argparse.Namespace) -> int:
    from ..export.devices import DEFAULT_MIN_DEVICE_CLIPS, DeviceSettings
    from ..export.export import export_run
    from ._render import Renderer

    per_device = None
    if args.per_device:
        per_device = DeviceSettings(min_clips=DEFAULT_MIN_DEVICE_CLIPS if args.min_device_clips is None
                                    else args.min_device_clips, epochs=args.device_epochs)
    elif args.min_device_clips is not None or args.device_epochs is not None:
        raise ConfigError("--min-device-clips and --device-epochs go with --per-device")
    with Renderer() as render:
        summary = export_run(
            args.run,
            args.out,
            results_dir=args.results_dir,
            trial_id=args.trial_id,
            retrain=args.retrain,
            force=args.force,
            cache_dir=args.cache_dir,
            teacher_cache_dir=args.teacher_cache_dir,
            device=args.device,
            qat_epochs=args.qat_epochs,
            seeds=args.seeds,
            threads=args.threads,
            dir_folder=args.dir_folder,
            per_device=per_device,
            on_event=render,
        )
    if args.json:
        json.dump(summary.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    console = _console()
    m = summary.metrics
    table = Table(title=f"Exported trial {summary.trial_id} of run {summary.run_name}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("limit", justify="right")
    table.add_column("ok")
    for fig, value, limit, ok in summary.budget_rows:
        table.add_row(str(fig), _fmt(value, "int"), _fmt(limit, "int"), "yes" if ok else "NO")
    dep, ref = summary.deployed, summary.metrics_fp32
    table.add_row(f"deployed weights ({dep['precision']}, measured)", _fmt(dep["weights_bytes"], "int"),
                  _fmt(dep["max_param_bytes"], "int"), "yes" if dep["within_budget"] else "NO")
    for key, label in (("macro_accuracy", "test macro accuracy"), ("log_loss", "test log loss"),
                       ("seen_macro_accuracy", "test macro accuracy, seen devices"),
                       ("unseen_macro_accuracy", "test macro accuracy, unseen devices")):
        if m.get(key) is not None:
            table.add_row(f"{label} ({dep['precision']} / float32)",
                          f"{_fmt(m.get(key), 'acc')} / {_fmt(ref.get(key), 'acc')}", "", "")
    qat = dep.get("qat") or {}
    if qat.get("reason"):
        table.add_row("QAT", str(qat["reason"]), "", "")
    table.add_row("ONNX max |diff| vs torch (float32 graph)", f"{summary.onnx_max_abs_diff:.2e}", "", "")
    seeds = summary.record.get("seeds")
    if seeds:
        from .compare import pm

        table.add_row(f"test macro accuracy over {len(seeds['seeds'])} seeds", pm(seeds["test_macro_accuracy"]), "", "")
    console.print(table)
    if summary.record.get("against_reference"):
        console.print(f"against the search's reference arms: {summary.record['against_reference']['text']}")
    if seeds:
        console.print(f"over seeds {seeds['seeds']}: {seeds['how']}; the exported weights are those of "
                      f"{seeds['weights']}")
    if "device_report" in summary.extra:
        _print_device_report(console, summary.extra)
    console.print(f"files in {summary.out_dir}: " + ", ".join(p.name for p in summary.files))
    return 0


def _print_device_report(console: Any, extra: dict[str, Any]) -> None:
    report = extra["device_report"]
    table = Table(title="Device-specific models: test macro accuracy (deployed)")
    for col in ("device", "seen", "test clips", "general", "device model"):
        table.add_column(col, justify="left" if col == "device" else "right")
    for dev, row in report["per_device"].items():
        table.add_row(dev, {True: "yes", False: "no"}.get(row["seen"], "?"), str(row["n"]),
                      _fmt(row["general"], "acc"), _fmt(row["device_model"], "acc") if row["device_model"] is not None
                      else "(general)")
    r = report["routed"]
    table.add_row("routed", "", "", "", f"{_fmt(r['macro_accuracy'], 'acc')} (seen {_fmt(r['seen_macro_accuracy'], 'acc')}"
                  f", unseen {_fmt(r['unseen_macro_accuracy'], 'acc')})")
    console.print(table)
    for dev, n in extra.get("skipped_devices", {}).items():
        console.print(f"device {dev}: {n} training clips, no model of its own (below --min-device-clips)")


# ------------------------------------------------------------------------------------------------ predict


def _short_paths(paths: list[Path]) -> tuple[Path | None, list[str]]:
    """(the folder the files share, each file relative to it): keeps the table narrow; --csv keeps full paths."""
    import os

    if not paths:
        return None, []
    common = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
    return common, [str(p.resolve().relative_to(common)) for p in paths]


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..export import predict as P

    if args.csv and Path(args.csv).is_dir():
        raise ConfigError(f"--csv {args.csv} is a folder; expected a file name")
    from ._render import Renderer

    with Renderer() as render:
        result = P.predict_files(args.export_dir, args.inputs, device=args.device, precision=args.precision,
                                 device_id=args.device_id, on_event=render)
    if args.csv:
        P.write_csv(result, args.csv)
    console = _console()
    common, names = _short_paths([row.path for row in result.rows])
    table = Table(title=f"Predictions of {result.model_name} ({result.ran}): {len(result.rows)} file(s) in {common}")
    table.add_column("file", overflow="fold", min_width=min(60, max((len(n) for n in names), default=4)))
    table.add_column("scene")
    table.add_column("p(scene)", justify="right")
    table.add_column("windows", justify="right")
    table.add_column("model")
    for label in result.labels:
        table.add_column(label, justify="right")
    for name, row in zip(names, result.rows):
        if row.error is not None:
            table.add_row(name, "[red]error[/red]", "-", "-", "-", *["-"] * len(result.labels))
            continue
        table.add_row(
            name, row.scene, f"{row.probabilities[row.scene]:.3f}", str(row.windows), row.model,
            *[f"{row.probabilities[label]:.3f}" for label in result.labels],
        )
    console.print(table)
    if args.csv:
        console.print(f"wrote {args.csv}")
    for row in result.failed:  # one line each on stderr; the good files got their output all the same
        print(f"asc-search predict: error: {bound_message(row.error)}", file=sys.stderr)
    if result.failed:
        print(f"asc-search predict: {len(result.failed)} of {len(result.rows)} file(s) could not be classified",
              file=sys.stderr)
        return 2
    return 0
