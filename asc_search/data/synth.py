"""Built-in synthetic data in exactly the TAU Urban Acoustic Scenes 2022 Mobile layout.

What it models (per clip, 1 s mono 44.1 kHz 24-bit):

* a *scene* = a sound generator with broad priors over: diffuse background noise (spectral slope, low-pass, level,
  slow swelling), tonal parts (engine / motor / ventilation hum with harmonics and speed drift), and Poisson
  streams of events of seven kinds (footsteps, talkers, crowd babble, vehicle pass-bys, beeps and chimes, music
  notes, bird chirps, brake / rail squeal), each with its own rate and level; then room or cabin reverberation
  (exponentially decaying noise impulse response, scene-dependent RT60 and wet level);
* a *recording location* (``identifier``) draws its own parameters from its scene's prior, so two locations of one
  scene sound different and neighbouring scenes overlap (bus vs tram, airport vs mall vs metro station, street
  pedestrian vs public square); each clip then jitters around its location;
* *devices* a, b, c, s1-s6 = fixed transfer functions: high-pass and low-pass corners (bandwidth), resonances and
  dips (frequency response), gain, self-noise floor and soft or hard clipping. Clips of one moment are recorded by
  several devices, as in TAU; s4-s6 appear only in the test split, where they cost accuracy as in the real task.

What it does not model: real sound sources and their semantics, speech content, spatial (stereo) cues, long-term
temporal structure across a 10 s recording (segments are independent 1 s draws), the real devices' measured
responses, codec artefacts, or the real data set's class confusions. Use it to exercise the tool and compare
methods, not to report challenge numbers.

Deterministic for a seed: every random draw comes from numpy Generators seeded from (seed, chunk), independent of
how many worker processes render the chunks.

This module plans the data set (moments, locations, devices, splits) and writes it; the sound model (scene priors,
devices) is :mod:`asc_search.data.synth_model`, the rendering :mod:`asc_search.data.synth_render`.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_output_dir
from .._progress import OnEvent, progress
from ..config import ALL_DEVICES, DCASE_LABELS, SEEN_DEVICES, SUBSET_PERCENTS
from ..errors import ConfigError, DataError
from .synth_model import DEVICES, SCENES, draw_location
from .synth_render import SAMPLE_RATE, render_chunk

__all__ = ["SAMPLE_RATE", "CITIES", "SCENES", "DEVICES", "synthesize", "plan_dataset"]

CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
TEST_FRACTION = 0.25  # share of clips in the test split
DEVICE_A_SHARE = 0.62  # share of device a among train clips (TAU: ~73 %)
TEST_DEVICES_PER_MOMENT = 3  # each test moment is recorded by this many devices (all 9 appear equally)
_CHUNK = 64  # base clips rendered per task

# ------------------------------------------------------------------------------------------------- plan
def _counts(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plan_dataset(n_clips: int, seed: int = 0) -> tuple[list[dict], list[tuple[int, str]]]:
    """Decide every clip: returns (moments, clips) where a moment is one scene recording (scene, city, location,
    segment, index, split, acoustic parameters) and clips are (moment index, device) pairs."""
    if n_clips < 100:
        raise ConfigError(f"--clips must be at least 100 (every scene, split and device needs clips), got {n_clips}")
    rng = np.random.default_rng([seed, 1])
    n_test = int(round(n_clips * TEST_FRACTION))
    n_train = n_clips - n_test
    n_a = int(round(n_train * DEVICE_A_SHARE))
    other = [d for d in SEEN_DEVICES if d != "a"]
    other_counts = _counts(n_train - n_a, len(other))
    n_test_moments = math.ceil(n_test / TEST_DEVICES_PER_MOMENT)

    moments: list[dict] = []
    clips: list[tuple[int, str]] = []
    location_counter = 0
    cities = list(CITIES)
    for split, n_moments in (("train", n_a), ("test", n_test_moments)):
        per_scene = _counts(n_moments, len(DCASE_LABELS))
        start = len(moments)
        for s_idx, scene in enumerate(DCASE_LABELS):
            n_s = per_scene[s_idx]
            if split == "train":
                n_locs = int(np.clip(round(n_s / 10), 3, 60))
            else:
                n_locs = int(np.clip(round(n_s / 5), 1, 30))
            n_locs = max(1, min(n_locs, n_s))
            loc_sizes = _counts(n_s, n_locs)
            for size in loc_sizes:
                city = cities[int(rng.integers(len(cities)))]
                location = str(1000 + 10 * location_counter + int(rng.integers(10)))
                location_counter += 1
                params = draw_location(SCENES[scene], rng)
                for k in range(size):
                    segment, index = divmod(k, 10)
                    moments.append(
                        dict(scene=scene, city=city, location=location, segment=str(10_000 * (segment + 1)),
                             index=index, split=split, loc_params=params)
                    )
        ids = list(range(start, len(moments)))
        if split == "train":
            clips.extend((i, "a") for i in ids)
            for device, count in zip(other, other_counts):
                chosen = rng.choice(ids, size=min(count, len(ids)), replace=False)
                clips.extend((int(i), device) for i in sorted(chosen))
        else:
            order = rng.permutation(ids)
            slots: list[tuple[int, str]] = []
            for j in range(0, len(order), 3):
                perm = rng.permutation(ALL_DEVICES)
                for g, i in enumerate(order[j : j + 3]):
                    for device in perm[3 * g : 3 * g + 3]:
                        slots.append((int(i), str(device)))
            keep = np.sort(rng.permutation(len(slots))[:n_test])
            clips.extend(slots[k] for k in keep)
    return moments, clips


# ------------------------------------------------------------------------------------------------- write
def synthesize(
    out_dir: str | os.PathLike, n_clips: int = 2000, seed: int = 0, workers: int | None = None,
    on_event: OnEvent | None = None,
) -> Path:
    """Write a synthetic data set of ``n_clips`` clips in the TAU layout at ``out_dir`` and return it.

    ``out_dir`` must not exist or be empty. Written under a temporary name beside it, then renamed: a crash never
    leaves a half data set. ``workers`` processes render in parallel (default: all cores, at most 2 per 1,000
    clips); the result does not depend on it. ``on_event`` receives ``progress`` events (clips written).
    """
    import pandas as pd

    if isinstance(n_clips, bool) or not isinstance(n_clips, int):
        raise ConfigError(f"n_clips must be an integer, got {n_clips!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; expected a new or empty output folder")
    moments, clips = plan_dataset(n_clips, seed)

    rows = []
    per_moment: list[list[tuple[str, str]]] = [[] for _ in moments]
    for i, device in clips:
        m = moments[i]
        name = f"{m['scene']}-{m['city']}-{m['location']}-{m['segment']}-{m['index']}-{device}.wav"
        per_moment[i].append((device, name))
        rows.append(
            dict(filename=f"audio/{name}", scene_label=m["scene"], identifier=f"{m['city']}-{m['location']}",
                 source_label=device, split=m["split"])
        )
    table = pd.DataFrame(rows).sort_values("filename", kind="stable").reset_index(drop=True)
    if table["filename"].duplicated().any():  # pragma: no cover - the plan makes names unique
        raise RuntimeError("synthetic plan produced duplicate file names")

    with atomic_output_dir(out) as tmp:  # out is absent or an empty folder (checked above)
        audio = tmp / "audio"
        audio.mkdir()
        used = [i for i in range(len(moments)) if per_moment[i]]
        tasks = []
        for c, start in enumerate(range(0, len(used), _CHUNK)):
            ids = used[start : start + _CHUNK]
            tasks.append((str(audio), seed, c, [moments[i] for i in ids], [per_moment[i] for i in ids]))
        n_workers = workers or min(os.cpu_count() or 1, max(1, len(tasks) // 4), 8)
        _run_tasks(tasks, n_workers, on_event)

        meta = table[["filename", "scene_label", "identifier", "source_label"]]
        meta.to_csv(tmp / "meta.csv", sep="\t", index=False)
        setup = tmp / "evaluation_setup"
        setup.mkdir()
        train = table[table["split"] == "train"]
        test = table[table["split"] == "test"]
        train[["filename", "scene_label"]].to_csv(setup / "fold1_train.csv", sep="\t", index=False)
        test[["filename", "scene_label"]].to_csv(setup / "fold1_evaluate.csv", sep="\t", index=False)
        test[["filename"]].to_csv(setup / "fold1_test.csv", sep="\t", index=False)
        _write_subsets(tmp / "split_setup", train, seed)
        (tmp / "README.txt").write_text(
            f"Synthetic acoustic scenes in the TAU Urban Acoustic Scenes 2022 Mobile layout, written by asc-search "
            f"(asc_search.data.synth) with n_clips={n_clips}, seed={seed}. Not real recordings.\n",
            encoding="utf-8",
        )
    return out


def _write_subsets(folder: Path, train: Any, seed: int) -> None:
    """``split5.csv`` ... ``split100.csv``: nested DCASE 2024-style training subsets of whole recordings (a location's
    10-clip segment, every device of it), drawn in one seeded order; subset p holds the first recordings of that
    order that make p % of the train clips."""
    key = train["filename"].str.rsplit("-", n=2).str[0]  # audio/<scene>-<city>-<location>-<segment>
    recordings = np.array(sorted(key.unique()))
    order = np.random.default_rng([seed, 2]).permutation(recordings)
    sizes = key.value_counts().reindex(order).to_numpy()
    cumulative = np.cumsum(sizes)
    folder.mkdir()
    for pct in SUBSET_PERCENTS:
        n = int(np.searchsorted(cumulative, pct / 100 * len(train) - 1e-9)) + 1
        chosen = train[key.isin(set(order[:n])).to_numpy()]
        chosen[["filename", "scene_label"]].to_csv(folder / f"split{pct}.csv", sep="\t", index=False)


def _run_tasks(tasks: list, n_workers: int, on_event: OnEvent | None = None) -> None:
    what = "synthesising clips"
    clips = lambda task: sum(len(devices) for devices in task[4])  # noqa: E731 - clips per chunk
    total = sum(clips(t) for t in tasks)
    if n_workers <= 1 or len(tasks) <= 1:
        for task in progress(tasks, what, on_event, total=total, weight=clips):
            render_chunk(task)
        return
    import multiprocessing as mp

    # fork: the children only run numpy and soundfile, and fork needs no __main__ guard in the caller's script
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        for _ in progress(zip(tasks, pool.map(render_chunk, tasks)), what, on_event, total=total,
                          weight=lambda pair: clips(pair[0])):
            pass
