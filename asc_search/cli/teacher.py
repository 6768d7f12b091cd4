"""``asc-search teacher``: Phase I.

    asc-search teacher train CACHE_DIR --out TEACHER_DIR [--epochs N] [--seed S] [--device auto|cpu|cuda]
                             [--preset NAME] [--no-mixup] [--no-mixstyle] [--no-masking] [--no-roll] ...
    asc-search teacher embed CACHE_DIR --teacher DIR [--teacher DIR ...] [--out DIR] [--address ADDR]
                             [--embedding first|concat] [--pool HxW|spatial]
    asc-search teacher import CACHE_DIR FILE.parquet [--out DIR]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._args import integer, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to ``sub``."""
    p = sub.add_parser(
        "teacher",
        help="Phase I: train a teacher, cache its embeddings and logits, or import external ones",
        description="Phase I: train a large teacher on the feature cache, then cache its embeddings and logits "
        "per clip (Parquet) so every student of the search learns from them without running the teacher again.",
    )
    tsub = p.add_subparsers(dest="teacher_command", metavar="SUBCOMMAND")
    tsub.required = True

    t = tsub.add_parser(
        "train",
        help="train a teacher preset on the train split of a feature cache",
        description="Train a teacher from the model zoo on the train split of CACHE_DIR; each epoch scores the "
        "location-disjoint validation split and the best checkpoint is kept; the test split is scored once at the "
        "end. Writes TEACHER_DIR/{teacher.pt, teacher.json, metrics.json}.",
    )
    t.add_argument("cache_dir", metavar="CACHE_DIR", type=Path, help="a feature cache (asc-search features)")
    t.add_argument("--out", required=True, type=Path, metavar="TEACHER_DIR", help="where to write the teacher")
    t.add_argument("--epochs", type=positive_int, default=30, help="training epochs (default 30)")
    t.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches, augmentation, split")
    t.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto = CUDA when present")
    t.add_argument("--preset", default=None, help="teacher preset (default: teacher for dcase, teacher_quick for "
                   "small inputs; see asc-search complexity --list)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="clips per step (default 64)")
    t.add_argument("--val-fraction", type=float, default=0.2, help="share of train locations held out for validation")
    t.add_argument("--threads", type=integer, default=0, help="torch CPU threads (default 0: torch's own choice)")
    t.add_argument("--no-mixup", action="store_true", help="turn mixup off")
    t.add_argument("--no-mixstyle", action="store_true", help="turn Freq-MixStyle off")
    t.add_argument("--no-masking", action="store_true", help="turn frequency and time masking off")
    t.add_argument("--no-roll", action="store_true", help="turn time roll off")
    t.add_argument("--subset", type=int, default=None, metavar="PCT", help="train on the DCASE 2024 training subset "
                   "of PCT %% (split_setup/splitPCT.csv; 25 = the DCASE 2025 rule)")
    t.add_argument("--dir-p", type=float, default=None, metavar="P", help="probability a clip gets a device impulse "
                   "response (default 0: off; 0.6 with --dir-folder)")
    t.add_argument("--dir-folder", type=Path, default=None, metavar="DIR", help="WAV device impulse responses (any "
                   "rate) for --dir-p (default: the built-in generic bank of microphone-like responses)")
    t.add_argument("--force", action="store_true", help="replace an existing teacher in TEACHER_DIR")
    t.set_defaults(func=run_train)

    e = tsub.add_parser(
        "embed",
        help="write the teacher cache (embeddings + logits per clip) of a feature cache",
        description="Run the teacher(s) on every clip of CACHE_DIR and write embeddings and logits to a Parquet "
        "teacher cache (default CACHE_DIR-teacher beside CACHE_DIR, where the search finds it). Several --teacher: "
        "logits are averaged; the embedding is the first teacher's or the concatenation of all.",
    )
    e.add_argument("cache_dir", metavar="CACHE_DIR", type=Path)
    e.add_argument("--teacher", action="append", required=True, type=Path, metavar="DIR", help="a teacher folder "
                   "(repeat for an ensemble)")
    e.add_argument("--out", type=Path, default=None, help="teacher cache folder (default CACHE_DIR-teacher)")
    e.add_argument("--address", default=None, help="run the shards as Ray tasks on this cluster (e.g. auto, "
                   "HOST:6379)")
    e.add_argument("--embedding", default="first", choices=("first", "concat"),
                   help="ensemble embedding: the first teacher's, or all concatenated along channels")
    e.add_argument("--pool", default="1x1", help="pool the feature map to HxW (default 1x1, a vector); "
                   "'spatial' keeps the full map")
    e.add_argument("--batch-size", type=positive_int, default=256, help="clips per forward pass (default 256)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    e.set_defaults(func=run_embed)

    i = tsub.add_parser(
        "import",
        help="validate and adopt embeddings + logits computed elsewhere (Parquet keyed by filename)",
        description="Adopt FILE.parquet (columns filename, embedding, logits) as the teacher cache of CACHE_DIR. "
        "Every clip of the feature cache must be there; widths must be uniform; logits need one value per label.",
    )
    i.add_argument("cache_dir", metavar="CACHE_DIR", type=Path)
    i.add_argument("file", metavar="FILE.parquet", type=Path)
    i.add_argument("--out", type=Path, default=None, help="teacher cache folder (default CACHE_DIR-teacher)")
    i.set_defaults(func=run_import)


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f} %" if pct else f"{v:.4f}"


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the options change (the rest keep the teacher defaults)."""
    overrides: dict[str, Any] = {"num_threads": args.threads}
    if args.lr is not None:
        overrides["lr"] = args.lr
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.no_mixup:
        overrides["mixup_alpha"] = 0.0
    if args.no_mixstyle:
        overrides["freq_mixstyle_p"] = 0.0
    if args.no_masking:
        overrides.update(freq_mask=0, time_mask=0)
    if args.no_roll:
        overrides["time_roll"] = 0
    if args.dir_p is not None or args.dir_folder is not None:
        overrides["dir_p"] = 0.6 if args.dir_p is None else args.dir_p
    return overrides


def run_train(args: argparse.Namespace) -> int:
    from ..config import SplitConfig
    from ..teacher import check_teacher_out_dir, train_teacher
    from ._render import Renderer, output_console

    console = output_console()
    check_teacher_out_dir(args.out, args.force, "--out folder", "--force")  # names the options in the message

    def epoch_line(event: str, m: dict[str, Any]) -> None:
        if event == "epoch":
            console.print(
                f"epoch {m['epoch']:3d}/{m['epochs']}  train loss {m['train_loss']:.4f}  "
                f"val macro acc {_fmt(m.get('val_macro_accuracy'), True)}  "
                f"val log loss {_fmt(m.get('val_log_loss'))}  lr {m['lr']:.2e}  {m['epoch_time_s']:.1f} s"
            )

    with Renderer(other=epoch_line) as render:
        run = train_teacher(
            args.cache_dir,
            args.out,
            preset=args.preset,
            epochs=args.epochs,
            seed=args.seed,
            device=args.device,
            overrides=_train_overrides(args),
            split=SplitConfig(val_fraction=args.val_fraction, seed=args.seed, subset=args.subset),
            force=args.force,
            dir_folder=args.dir_folder,
            on_event=render,
        )
    _print_teacher(console, run)
    return 0


def _print_teacher(console: Any, run: Any) -> None:
    from rich.table import Table

    meta, metrics = run.meta, run.metrics
    c = meta["complexity"]
    console.print(
        f"teacher [bold]{meta['preset']}[/bold]: {c['params']:,} params, {c['macs']:,} MACs; best epoch "
        f"{metrics['best_epoch']} of {metrics['epochs_run']}"
    )
    table = Table(title="teacher metrics (best checkpoint by validation macro accuracy)")
    table.add_column("split")
    table.add_column("clips", justify="right")
    table.add_column("macro acc", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("log loss", justify="right")
    table.add_column("seen dev. macro", justify="right")
    table.add_column("unseen dev. macro", justify="right")
    for name in ("val", "test"):
        s = metrics.get(name)
        if s:
            table.add_row(name, str(s["n"]), _fmt(s["macro_accuracy"], True), _fmt(s["accuracy"], True),
                          _fmt(s["log_loss"]), _fmt(s.get("seen_macro_accuracy"), True),
                          _fmt(s.get("unseen_macro_accuracy"), True))
    console.print(table)
    test, val = metrics.get("test"), metrics.get("val") or {}
    if test:
        dev = Table(title="macro accuracy per device (* unseen: only in the test split)")
        for col in ("device", "seen", "test clips", "test macro acc", "val macro acc"):
            dev.add_column(col, justify="left" if col in ("device", "seen") else "right")
        for d, v in test.get("per_device", {}).items():
            val_dev = val.get("per_device", {}).get(d, {})
            seen = {True: "seen", False: "unseen*", None: "?"}[v["seen"]]
            dev.add_row(d, seen, str(v["n"]), _fmt(v["macro_accuracy"], True),
                        _fmt(val_dev.get("macro_accuracy"), True))
        console.print(dev)
        cls = Table(title="accuracy per class")
        for col in ("class", "test acc", "val acc"):
            cls.add_column(col, justify="left" if col == "class" else "right")
        for lab, acc in test["per_class"].items():
            cls.add_row(lab, _fmt(acc, True), _fmt(val.get("per_class", {}).get(lab), True))
        console.print(cls)
    console.print(f"wrote {run.out_dir}/teacher.pt, teacher.json, metrics.json")


def _parse_pool(text: str) -> tuple[int, int] | None:
    if text.strip().lower() == "spatial":
        return None
    try:
        h, w = (int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise ConfigError(f"--pool must be HxW (such as 1x1 or 2x2) or 'spatial', got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"--pool must be HxW with positive H and W, got {text!r}")
    return (h, w)


def _describe_cache(console: Any, out: Path) -> None:
    from ..data.teacher_cache import read_teacher_cache_meta

    meta = read_teacher_cache_meta(out)
    console.print(
        f"wrote teacher cache {out}: {meta['n_rows']} clips, embedding {'x'.join(map(str, meta['embedding_shape']))}"
        f" ({meta['layer']}), logits {meta['n_classes']}, {len(meta['files'])} file(s); feature fingerprint "
        f"{meta['feature_fingerprint']}"
    )


def run_embed(args: argparse.Namespace) -> int:
    from ..teacher import embed_features
    from ._render import Renderer, output_console

    console = output_console()
    pool = _parse_pool(args.pool)
    with Renderer() as render:
        out = embed_features(
            args.cache_dir,
            args.teacher,
            args.out,
            embedding=args.embedding,
            pool=pool,
            batch_size=args.batch_size,
            device=args.device,
            address=args.address,
            on_event=render,
        )
    _describe_cache(console, out)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..teacher import import_teacher
    from ._render import output_console

    out = import_teacher(args.cache_dir, args.file, args.out)
    _describe_cache(output_console(), out)
    return 0


__all__ = ["register", "run_train", "run_embed", "run_import"]
