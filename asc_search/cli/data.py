"""Data commands: built-in synthetic data, a data set summary, and the log-mel feature cache.

    asc-search data synth OUT_DIR [--clips N] [--seed S] [--workers N]
    asc-search data info DATASET_DIR [--labels auto|a,b,c] [--mono refuse|downmix] [--segment]
    asc-search features DATASET_DIR --out CACHE_DIR [--profile NAME] [--workers N] [--labels auto|a,b,c]
                        [--mono refuse|downmix] [--segment] [--allow-rare-labels] [--force]
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
        help="summarise a TAU-layout data set (clips per split, device and scene) and check its files",
        description=(
            "Read a TAU-layout data set, check meta.csv, the fold files and every audio file's header (present, "
            "decodable, mono, 1 s: what `features` needs, under the same --mono / --segment policy) and print what "
            "it holds. Every problem is reported at once (exit 2)."
        ),
    )
    info.add_argument("dataset_dir", metavar="DATASET_DIR", type=Path, help="data set root (holds meta.csv)")
    info.add_argument("--labels", default=None, metavar="LABELS", help=_LABELS_HELP)
    _audio_options(info)
    info.set_defaults(func=run_info)

    feat = sub.add_parser(
        "features",
        help="compute the log-mel feature cache (Parquet) of a data set",
        description=(
            "Read every clip of the fold-1 setup (soundfile), resample to the profile's rate when needed, compute "
            "log-mel spectrograms (torchaudio) and write them with the clip table to Parquet files in CACHE_DIR "
            "(which pandas, pyarrow or DuckDB read as one table; the manifest is CACHE_DIR/_manifest.json). "
            "Running again on unchanged inputs reuses the cache (after checking its files; --force rebuilds it). "
            "Clips must be mono and last 1 s within 10 ms (within that they are padded or trimmed at the end), unless "
            "--mono downmix / --segment say otherwise; every file is checked before anything is computed."
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
    feat.add_argument("--allow-rare-labels", action="store_true",
                      help="with --labels auto, keep labels of fewer than 3 clips or of one split only (refused by "
                           "default: usually a typo in meta.csv)")
    _audio_options(feat)
    feat.add_argument("--force", action="store_true",
                      help="rebuild the cache even when it is up to date (never touches a folder that is not a cache)")
    feat.set_defaults(func=run_features)


def _audio_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mono", choices=("refuse", "downmix"), default="refuse",
                        help="audio with several channels: refuse it (default) or average the channels")
    parser.add_argument("--segment", action="store_true",
                        help="cut recordings longer than 1 s into whole 1 s segments, one cache row each (FILE#k); "
                             "default: a clip must last 1 s within 10 ms")


def run_synth(args: argparse.Namespace) -> int:
    from ..data.synth import synthesize
    from ._render import Renderer, output_console

    if args.clips < 100:
        raise ConfigError(f"--clips must be at least 100 (every scene, split and device needs clips), got {args.clips}")
    started = time.perf_counter()
    with Renderer() as render:
        out = synthesize(args.out_dir, n_clips=args.clips, seed=args.seed, workers=args.workers, on_event=render)
    output_console().print(
        f"wrote {args.clips} synthetic clips (seed {args.seed}) to [bold]{out}[/] in {time.perf_counter() - started:.1f} s"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..data.audio import AudioPolicy, check_audio
    from ..data.tau import dataset_fingerprint, label_anomalies, read_meta, read_tau
    from ._render import output_console

    table = read_tau(args.dataset_dir, args.labels)
    meta_row = {name: i + 2 for i, name in enumerate(read_meta(args.dataset_dir)["filename"].tolist())}
    rows = [meta_row[name] for name in table["filename"].tolist()]
    dataset_fingerprint(args.dataset_dir, table, rows)  # every file is there
    segments, infos = check_audio(args.dataset_dir, table["filename"].tolist(), rows, 1.0,
                                AudioPolicy(mono=args.mono, segment=args.segment))
    console = output_console()
    labels = table.attrs["labels"]
    console.print(
        f"[bold]{args.dataset_dir}[/]: {len(table)} clips, {table['identifier'].nunique()} recording locations, "
        f"{table['city'].nunique()} cities, {len(labels)} labels"
    )
    rates = sorted({i.rate for i in infos})
    channels = sorted({i.channels for i in infos})
    console.print(
        f"audio: every file decodes; sample rates {', '.join(f'{r:,} Hz' for r in rates)}; channels "
        f"{', '.join(map(str, channels))}" + (f"; {sum(segments):,} 1 s segments" if args.segment else "; 1 s each")
    )
    for problem in label_anomalies(table):
        console.print(f"[yellow]warning:[/yellow] {problem} (a typo in meta.csv?)")
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
    from ..data.features import build_feature_cache_report
    from ._render import Renderer, output_console

    with Renderer() as render:
        report = build_feature_cache_report(
            args.dataset_dir, args.out, profile=args.profile, workers=args.workers, labels=args.labels,
            on_event=render, mono=args.mono, segment=args.segment, force=args.force,
            allow_rare_labels=args.allow_rare_labels,
        )
    console = output_console()
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
