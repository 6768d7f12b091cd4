"""Data commands: built-in synthetic data, a data set summary, and the log-mel feature cache.

    asc-search data synth OUT_DIR [--clips N] [--seed S] [--workers N]
    asc-search data info DATASET_DIR [--labels auto|a,b,c]
    asc-search features DATASET_DIR --out CACHE_DIR [--profile NAME] [--workers N] [--labels auto|a,b,c]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import PROFILES
from ..errors import ConfigError
from ._args import integer, positive_int

_LABELS_HELP = (
    "label set: default the 10 DCASE scenes in the organisers' order; 'auto' derives them from meta.csv (sorted); "
    "or a comma-separated list declares them in order"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` (synth, info) and ``features``."""
    data = sub.add_parser(
        "data",
        help="built-in synthetic data in the TAU layout; data set summary",
        description="Write built-in synthetic data in the TAU Urban Acoustic Scenes layout, or summarise a data set.",
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sub.required = True

    synth = data_sub.add_parser(
        "synth",
        help="write a synthetic data set in exactly the TAU layout",
        description=(
            "Write N synthetic 1 s mono 44.1 kHz 24-bit clips of the 10 DCASE scenes, recorded by devices a, b, c, "
            "s1-s6 (s4-s6 only in the test split), with meta.csv and evaluation_setup/fold1_*.csv. Deterministic "
            "for a seed."
        ),
    )
    synth.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="new (or empty) folder to write")
    synth.add_argument("--clips", type=integer, default=2000, metavar="N", help="total clips (default 2000, at least 100)")
    synth.add_argument("--seed", type=integer, default=0, metavar="S", help="random seed (default 0)")
    synth.add_argument("--workers", type=positive_int, default=None, metavar="N", help="processes (default: cores)")
    synth.set_defaults(func=run_synth)

    info = data_sub.add_parser(
        "info",
        help="summarise a TAU-layout data set (clips per split, device and scene)",
        description="Read a TAU-layout data set (checking meta.csv and the fold files) and print what it holds.",
    )
    info.add_argument("dataset_dir", metavar="DATASET_DIR", type=Path, help="data set root (holds meta.csv)")
    info.add_argument("--labels", default=None, metavar="LABELS", help=_LABELS_HELP)
    info.set_defaults(func=run_info)

    feat = sub.add_parser(
        "features",
        help="compute the log-mel feature cache (Parquet) of a data set",
        description=(
            "Read every clip of the fold-1 setup (soundfile), resample to the profile's rate when needed, compute "
            "log-mel spectrograms (torchaudio) and write them with the clip table to Parquet files in CACHE_DIR "
            "(which pandas, pyarrow or DuckDB read as one table; the manifest is CACHE_DIR/_manifest.json). "
            "Running again on unchanged inputs reuses the cache. Clips must be mono and last 1 s within 10 ms "
            "(within that they are padded or trimmed at the end)."
        ),
    )
    feat.add_argument("dataset_dir", metavar="DATASET_DIR", type=Path, help="data set root (holds meta.csv)")
    feat.add_argument("--out", required=True, type=Path, metavar="CACHE_DIR", help="cache folder (one per profile)")
    feat.add_argument(
        "--profile",
        default="quick",
        metavar="NAME",
        help=f"feature profile: {', '.join(f'{k} ({v.n_mels}x{v.n_frames})' for k, v in PROFILES.items())}; "
        "default quick",
    )
    feat.add_argument("--workers", type=positive_int, default=None, metavar="N",
                      help="audio decoding threads and torch threads (default: the cores, at most 8)")
    feat.add_argument("--labels", default=None, metavar="LABELS", help=_LABELS_HELP)
    feat.set_defaults(func=run_features)


def run_synth(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..data.synth import synthesize
    from ._render import Renderer

    if args.clips < 100:
        raise ConfigError(f"--clips must be at least 100 (every scene, split and device needs clips), got {args.clips}")
    started = time.perf_counter()
    with Renderer() as render:
        out = synthesize(args.out_dir, n_clips=args.clips, seed=args.seed, workers=args.workers, on_event=render)
    Console().print(
        f"wrote {args.clips} synthetic clips (seed {args.seed}) to [bold]{out}[/] in {time.perf_counter() - started:.1f} s"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..data.tau import read_tau

    table = read_tau(args.dataset_dir, args.labels)
    console = Console()
    labels = table.attrs["labels"]
    console.print(
        f"[bold]{args.dataset_dir}[/]: {len(table)} clips, {table['identifier'].nunique()} recording locations, "
        f"{table['city'].nunique()} cities, {len(labels)} labels"
    )
    counts = table.groupby(["device", "split"]).size().unstack(fill_value=0)
    view = Table(title="clips per device and split")
    view.add_column("device")
    for split in counts.columns:
        view.add_column(str(split), justify="right")
    for device, row in counts.iterrows():
        view.add_row(str(device), *(str(int(v)) for v in row))
    console.print(view)
    scenes = table.groupby(["scene_label", "split"]).size().unstack(fill_value=0)
    view = Table(title="clips per scene and split")
    view.add_column("scene")
    for split in scenes.columns:
        view.add_column(str(split), justify="right")
    for scene in labels:
        row = scenes.loc[scene] if scene in scenes.index else None
        view.add_row(scene, *(str(int(row[s])) if row is not None else "0" for s in scenes.columns))
    console.print(view)
    return 0


def run_features(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..data.features import build_feature_cache_report
    from ._render import Renderer

    with Renderer() as render:
        report = build_feature_cache_report(
            args.dataset_dir, args.out, profile=args.profile, workers=args.workers, labels=args.labels,
            on_event=render,
        )
    console = Console()
    if report.reused:
        console.print(
            f"feature cache [bold]{report.path}[/] is up to date (profile {report.profile}, {report.n_clips} clips, "
            f"fingerprint {report.fingerprint}): reused"
        )
    else:
        console.print(
            f"wrote feature cache [bold]{report.path}[/] (profile {report.profile}, {report.n_clips} clips in "
            f"{report.n_files} Parquet file(s), fingerprint {report.fingerprint}) in {report.seconds:.1f} s "
            f"({report.n_clips / max(report.seconds, 1e-9):.0f} clips/s)"
        )
    return 0
