"""Search files (YAML): reading and validating one into a :class:`~asc_search.search.spec.SearchSpec`.

A search file has these top-level sections (``search_spaces/quick.yaml`` is a commented example)::

    profile: quick                      # feature profile; must equal the feature cache's profile
    split: {val_fraction: 0.2, seed: 0} # validation carved from train by recording location
    budget: {max_param_bytes: 128000, param_dtype: int8, max_macs: 30000000}
    student:  {...}                     # architecture parameters (StudentConfig fields + n_stages/blocks_per_stage)
    distill:  {...}                     # DistillConfig fields + use_embedding, embed_block
    train:    {...}                     # TrainConfig fields (lr, weight_decay, batch_size, epochs, ...)
    search:   {...}                     # sampler, seed, num_samples, max_concurrent, asha, resources, objectives,
                                        # score_precision (float | deployed)
    references: [...]                   # optional reference arms (absent: the defaults; [] none), see references.py

A parameter is either a plain value (fixed) or a distribution::

    base_channels: {type: int, low: 8, high: 48, step: 4}
    lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    emb_loss: {type: categorical, choices: [mse, cosine]}
    emb_weight: {type: float, low: 0.1, high: 10, log: true, when: {use_embedding: true}, default: 0.0}

``when`` makes a parameter conditional on parameters declared before it (the proposal gets ``default``, or the
config's own default, when the condition does not hold). ``n_stages`` + ``blocks_per_stage`` are conditional by
construction: one ``blocks_s<i>`` parameter per stage that the proposal has.

**Who checks what.** The keys of ``split``, ``budget``, ``student``, ``distill`` and ``train`` are fields of
:class:`~asc_search.config.SplitConfig`, :class:`~asc_search.config.Budget`,
:class:`~asc_search.models.student.StudentConfig`, :class:`~asc_search.training.losses.DistillConfig` and
:class:`~asc_search.training.loop.TrainConfig`: their type comes from the field's annotation and their bounds from the
config's own validation (every fixed value, bound and choice is tried on the config; its message is passed on
under the file and key path). Only the keys the search file adds (``n_stages``, ``blocks_per_stage``,
``use_embedding``, ``embed_block``, the ``search:`` section, the split seed) have their rules here. Every mistake
raises :class:`~asc_search.errors.ConfigError` naming the file, the key path (``student.base_channels.low``) and
what is allowed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .._yaml import MAX_YAML_BYTES, load_yaml
from ..config import PROFILES, SUBSET_PERCENTS, Budget, FeatureProfile, SplitConfig, get_profile
from ..errors import ConfigError, quote
from .references import parse_references
from .rules import Field, Where, config_fields, fmt
from .spec import (
    EMBED_BLOCK_CHOICES,
    GRACE_UNITS,
    MISSING,
    OBJECTIVES,
    SAMPLERS,
    SCORE_PRECISIONS,
    ParamSpec,
    SearchSettings,
    SearchSpec,
)

__all__ = ["load_space", "resolve_space", "builtin_spaces", "builtin_spaces_dir", "parse_space", "section_keys",
           "with_num_samples", "with_subset"]

PARAM_TYPES = ("int", "float", "categorical")
#: TrainConfig fields the search sets itself (per trial) and a file must not set.
TRAIN_RESERVED = ("seed", "device", "num_threads")
#: StudentConfig fields the search sets itself (from the feature cache, and from ``distill.embed_block``).
STUDENT_RESERVED = ("n_classes", "in_channels", "embed_block")
#: Config fields the search sets per trial, by section, and where their value comes from.
_RESERVED = {
    "train": {key: "seed: search.seed + trial number; device and num_threads: from search.resources"
              for key in TRAIN_RESERVED},
    "student": {key: "n_classes and in_channels: from the feature cache; embed_block: from distill.embed_block"
                for key in STUDENT_RESERVED},
}
_TOP_KEYS = ("description", "profile", "split", "budget", "student", "distill", "train", "search", "references")


def section_keys(section: str) -> dict[str, Field]:
    """What each key of a parameter section (student | distill | train) accepts."""
    from ..models.student import StudentConfig
    from ..training.loop import TrainConfig
    from ..training.losses import DistillConfig

    if section == "student":
        keys = config_fields(StudentConfig, exclude=STUDENT_RESERVED, context={"n_blocks": {"strides": {}}})
        keys["n_stages"] = Field("int", minimum=1)  # with blocks_per_stage: n_blocks drawn stage by stage
        keys["blocks_per_stage"] = Field("int", minimum=1)
        return keys
    if section == "distill":
        keys = config_fields(DistillConfig)
        # A switch other parameters may depend on (``when: {use_embedding: true}``); false sets emb_weight to 0.
        keys["use_embedding"] = Field("bool")
        keys["embed_block"] = Field("str", choices=EMBED_BLOCK_CHOICES)  # relative to the proposal's depth
        return keys
    if section == "train":
        return config_fields(TrainConfig, exclude=TRAIN_RESERVED)
    raise KeyError(section)


# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------
def _parse_param(w: Where, section: str, name: str, raw: Any, rule: Field, earlier: dict[str, ParamSpec]) -> ParamSpec:
    path = f"{section}.{name}"
    if rule.kind == "structured":
        if isinstance(raw, Mapping) and "type" in raw:
            raise w.error(path, "cannot be searched; give a fixed value")
        return ParamSpec(name=name, section=section, type="fixed", value=raw)  # checked by _check_student
    if not isinstance(raw, Mapping):
        if raw is None or isinstance(raw, list):
            raise w.error(
                path,
                f"must be a fixed value ({rule.describe()}) or a mapping with type: {' | '.join(PARAM_TYPES)}; "
                f"got {fmt(raw)} (a list of options is written {{type: categorical, choices: [...]}})",
            )
        return ParamSpec(name=name, section=section, type="fixed", value=rule.check(w, raw, path))
    spec = w.mapping(raw, path)
    ptype = spec.get("type")
    if ptype not in PARAM_TYPES + ("fixed",):
        raise w.error(f"{path}.type", f"must be one of {', '.join(PARAM_TYPES + ('fixed',))}, got {fmt(ptype)}")
    common = ("type", "when", "default")
    kwargs: dict[str, Any] = {}
    if ptype == "fixed":
        w.keys(spec, path, common + ("value",))
        kwargs["value"] = w.value(spec, "value", path, rule)
    elif ptype in ("int", "float"):
        w.keys(spec, path, common + ("low", "high", "step", "log"))
        kwargs.update(_numeric_range(w, spec, path, ptype, rule))
    else:  # categorical
        w.keys(spec, path, common + ("choices",))
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise w.error(f"{path}.choices", f"must be a non-empty list, got {fmt(choices)}")
        checked = tuple(rule.check(w, choice, f"{path}.choices[{i}]") for i, choice in enumerate(choices))
        if len(set(map(repr, checked))) != len(checked):
            raise w.error(f"{path}.choices", f"must not repeat a value, got {fmt(choices)}")
        kwargs["choices"] = checked
    when = _parse_when(w, spec, path, earlier)
    default = MISSING
    if "default" in spec:
        if not when:
            raise w.error(f"{path}.default", "only makes sense together with when:")
        default = w.value(spec, "default", path, rule)
    return ParamSpec(name=name, section=section, type=ptype, when=when, default=default, **kwargs)


def _numeric_range(w: Where, spec: dict, path: str, ptype: str, rule: Field) -> dict[str, Any]:
    if rule.kind not in ("int", "float"):
        raise w.error(f"{path}.type", f"must be categorical or fixed for this parameter ({rule.describe()})")
    if ptype == "float" and rule.kind == "int":
        raise w.error(f"{path}.type", "must be int (this parameter takes integers)")
    bound = rule.with_kind(ptype)
    low = w.value(spec, "low", path, bound)
    high = w.value(spec, "high", path, bound)
    if low > high:
        raise w.error(f"{path}.low", f"must be <= high ({fmt(high)}), got {fmt(low)}")
    log = w.value(spec, "log", path, Field("bool"), default=False)
    step = w.value(spec, "step", path, Field(ptype, minimum=0, open_minimum=True), default=None)
    if log and low <= 0:
        raise w.error(f"{path}.low", f"must be > 0 when log: true, got {fmt(low)}")
    if log and step is not None and step != 1:
        raise w.error(f"{path}.step", "cannot be combined with log: true (Optuna samples log ranges without a step)")
    if step is not None and ptype == "int" and (high - low) % step:
        raise w.error(f"{path}.step", f"must divide high - low ({high - low}), got {step}")
    return {"low": low, "high": high, "step": step, "log": log}


def _parse_when(w: Where, spec: dict, path: str, earlier: dict[str, ParamSpec]) -> tuple[tuple[str, tuple], ...]:
    if "when" not in spec:
        return ()
    cond = w.mapping(spec["when"], f"{path}.when")
    if not cond:
        raise w.error(f"{path}.when", "must name at least one earlier parameter: {param: value or [values]}")
    when = []
    for other, allowed in cond.items():
        if other not in earlier:
            raise w.error(
                f"{path}.when.{other}",
                "must name a parameter declared before this one; declared so far: " + (", ".join(earlier) or "none"),
            )
        when.append((other, tuple(allowed) if isinstance(allowed, list) else (allowed,)))
    return tuple(when)


# --------------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------------
def _parse_split(w: Where, raw: Any) -> SplitConfig:
    s = w.mapping(raw, "split")
    rules = config_fields(SplitConfig)
    w.keys(s, "split", tuple(rules))
    seed_rule = Field("int", minimum=0)  # SplitConfig leaves the seed unchecked; numpy wants it >= 0
    subset = s.get("subset")
    if subset is not None and (isinstance(subset, bool) or subset not in SUBSET_PERCENTS):
        raise w.error("split.subset", f"must be one of {', '.join(map(str, SUBSET_PERCENTS))} (the DCASE 2024 "
                                      f"training subset, percent of train) or null, got {fmt(subset)}")
    return SplitConfig(val_fraction=w.value(s, "val_fraction", "split", rules["val_fraction"], 0.2),
                       seed=w.value(s, "seed", "split", seed_rule, 0), subset=subset)


def _parse_budget(w: Where, raw: Any) -> Budget:
    b = w.mapping(raw, "budget")
    rules = config_fields(Budget)
    w.keys(b, "budget", tuple(rules))
    return Budget(**{key: w.value(b, key, "budget", rule) for key, rule in rules.items()})  # all required


def _parse_search(w: Where, raw: Any) -> SearchSettings:
    s = w.mapping(raw, "search")
    w.keys(s, "search", ("sampler", "seed", "num_samples", "max_concurrent", "max_consecutive_rejections",
                         "n_startup_trials", "population_size", "asha", "resources", "max_failures", "objectives",
                         "score_precision"))
    d = SearchSettings()
    positive = Field("int", minimum=1)
    kw: dict[str, Any] = {
        "sampler": w.value(s, "sampler", "search", Field("str", choices=SAMPLERS), d.sampler),
        "seed": w.value(s, "seed", "search", Field("int", minimum=0), d.seed),
        "num_samples": w.value(s, "num_samples", "search", positive, d.num_samples),
        "max_concurrent": w.value(s, "max_concurrent", "search", positive, d.max_concurrent),
        "max_consecutive_rejections": w.value(s, "max_consecutive_rejections", "search", positive,
                                              d.max_consecutive_rejections),
        "n_startup_trials": w.value(s, "n_startup_trials", "search", Field("int", minimum=0), d.n_startup_trials),
        "population_size": w.value(s, "population_size", "search", Field("int", minimum=2), d.population_size),
        "max_failures": w.value(s, "max_failures", "search", Field("int", minimum=0, maximum=10), d.max_failures),
        "score_precision": w.value(s, "score_precision", "search", Field("str", choices=SCORE_PRECISIONS),
                                   d.score_precision),
    }
    asha = w.mapping(s.get("asha"), "search.asha")
    w.keys(asha, "search.asha", ("enabled", "grace_period", "unit", "reduction_factor"))
    kw["asha_enabled"] = w.value(asha, "enabled", "search.asha", Field("bool"), d.asha_enabled)
    kw["grace_unit"] = w.value(asha, "unit", "search.asha", Field("str", choices=GRACE_UNITS), d.grace_unit)
    kw["grace_period"] = w.value(asha, "grace_period", "search.asha", positive, d.grace_period)
    kw["reduction_factor"] = w.value(asha, "reduction_factor", "search.asha", Field("int", minimum=2),
                                     d.reduction_factor)
    res = w.mapping(s.get("resources"), "search.resources")
    w.keys(res, "search.resources", ("cpus_per_trial", "gpus_per_trial"))
    kw["cpus_per_trial"] = float(w.value(res, "cpus_per_trial", "search.resources",
                                         Field("float", minimum=0, open_minimum=True), 1.0))
    gpus = float(w.value(res, "gpus_per_trial", "search.resources", Field("float", minimum=0), 0.0))
    if gpus > 1 and gpus != int(gpus):
        raise w.error("search.resources.gpus_per_trial", f"must be a fraction <= 1 or a whole number of GPUs, got {gpus:g}")
    kw["gpus_per_trial"] = gpus
    kw["objectives"] = _parse_objectives(w, s.get("objectives", list(d.objectives)))
    return SearchSettings(**kw)


def _parse_objectives(w: Where, objectives: Any) -> tuple[str, ...]:
    if isinstance(objectives, str):
        objectives = [objectives]
    if not isinstance(objectives, list) or not objectives:
        raise w.error("search.objectives", f"must be a non-empty list of {', '.join(OBJECTIVES)}, got {fmt(objectives)}")
    for i, obj in enumerate(objectives):
        if obj not in OBJECTIVES:
            raise w.error(f"search.objectives[{i}]", f"must be one of {', '.join(OBJECTIVES)}, got {fmt(obj)}")
    if objectives[0] != "val_macro_accuracy" or len(set(objectives)) != len(objectives):
        raise w.error(
            "search.objectives",
            "must start with val_macro_accuracy and may add macs and/or param_bytes once each "
            f"(a Pareto search), got {fmt(objectives)}",
        )
    return tuple(objectives)


def _parse_params(w: Where, top: dict) -> dict[str, tuple[ParamSpec, ...]]:
    earlier: dict[str, ParamSpec] = {}
    sections: dict[str, tuple[ParamSpec, ...]] = {}
    for section in ("student", "distill", "train"):
        sec = w.mapping(top.get(section), section)
        rules = section_keys(section)
        for key in _RESERVED.get(section, ()):
            if key in sec:
                raise w.error(f"{section}.{key}", f"is set by the search itself ({_RESERVED[section][key]}); remove it")
        w.keys(sec, section, tuple(rules))
        specs = []
        for name, raw_param in sec.items():
            earlier[name] = _parse_param(w, section, name, raw_param, rules[name], earlier)
            specs.append(earlier[name])
        sections[section] = tuple(specs)
    return sections


def _check_student(w: Where, specs: tuple[ParamSpec, ...]) -> None:
    names = [p.name for p in specs]
    if ("n_stages" in names) != ("blocks_per_stage" in names):
        raise w.error(
            "student.n_stages" if "n_stages" not in names else "student.blocks_per_stage",
            "n_stages and blocks_per_stage go together (blocks_per_stage is drawn once per stage); give both, or a "
            "fixed n_blocks: [3, 2, 1]",
        )
    if "n_blocks" in names and "n_stages" in names:
        raise w.error("student.n_blocks", "give either n_blocks (fixed) or n_stages + blocks_per_stage, not both")
    if "n_stages" in names and names.index("n_stages") > names.index("blocks_per_stage"):
        raise w.error("student.blocks_per_stage", "must come after n_stages")
    rules = section_keys("student")
    for p in specs:
        if p.name in ("n_stages", "blocks_per_stage") and p.when:
            raise w.error(f"student.{p.name}.when", "the depth parameters cannot be conditional")
        if p.name == "n_blocks":
            rules["n_blocks"].check(w, tuple(p.value) if isinstance(p.value, list) else p.value, "student.n_blocks")
        if p.name == "strides":
            _check_strides(w, p.value, rules["strides"])


def _check_strides(w: Where, strides: Any, rule: Field) -> None:
    """Block names ``b<k>`` (a proposal with fewer blocks ignores the rest), each stride as StudentConfig takes it."""
    if not isinstance(strides, Mapping) or not all(
        isinstance(k, str) and k[:1] == "b" and k[1:].isdigit() and int(k[1:]) >= 1 for k in strides
    ):
        raise w.error("student.strides",
                      f"must map block names b1, b2, ... to [freq_stride, time_stride], e.g. {{b2: [2, 2]}}, got {fmt(strides)}")
    depth = max((int(k[1:]) for k in strides), default=1)
    rule.check(w, strides, "student.strides", n_blocks=(depth,))


def _check_train_against_profile(w: Where, specs: tuple[ParamSpec, ...], profile: FeatureProfile) -> None:
    """Masks and rolls must fit the profile's spectrogram (fit refuses them per trial otherwise)."""
    limits = {"freq_mask": (profile.n_mels, "mel bins"), "time_mask": (profile.n_frames, "frames"),
              "time_roll": (profile.n_frames, "frames")}
    for p in specs:
        if p.name not in limits:
            continue
        values = [p.value] if p.type == "fixed" else list(p.choices or ()) + [v for v in (p.high,) if v is not None]
        limit, what = limits[p.name]
        for v in values:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= limit:
                raise w.error(f"train.{p.name}",
                              f"must be smaller than the {limit} {what} of profile {profile.name!r}, got {fmt(v)}")


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------
def builtin_spaces_dir() -> Path:
    """Where the built-in search files live: the repository's ``search_spaces/`` (source or editable install), else
    the copy a wheel installs under ``<prefix>/share/asc-search/search_spaces``."""
    in_repo = Path(__file__).resolve().parents[2] / "search_spaces"
    if in_repo.is_dir():
        return in_repo
    return Path(sys.prefix) / "share" / "asc-search" / "search_spaces"


def builtin_spaces() -> list[str]:
    """Names of the built-in search files (``quick``, ``dcase``, ...)."""
    return sorted(f.stem for f in builtin_spaces_dir().glob("*.yaml"))


def resolve_space(path_or_name: str | Path) -> Path:
    """A search file: an existing path, or the name of a built-in one (``quick`` or ``quick.yaml``)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.parent == Path(".") and path.suffix in ("", ".yaml"):
        candidate = builtin_spaces_dir() / f"{path.stem}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"search file {path} does not exist; give a path or a built-in space: {', '.join(builtin_spaces())}"
    )


def load_space(path: str | Path) -> SearchSpec:
    """Read and validate a search file (a path or a built-in name, see :func:`resolve_space`). A bad file raises
    ConfigError naming the file, key and what is allowed."""
    path = resolve_space(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; expected a search file (YAML) of at most "
                              f"{MAX_YAML_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the search file: {exc}") from None
    return parse_space(text, source=str(path))


def parse_space(text: str, source: str = "<search file>") -> SearchSpec:
    """Validate the YAML ``text`` of a search file (``source`` names it in messages)."""
    w = Where(source)
    raw = load_yaml(text, source)
    if raw is None:
        raise ConfigError(f"{source}: the search file is empty; it needs the sections {', '.join(_TOP_KEYS[1:])}")
    top = w.mapping(raw, "(top level)")
    w.keys(top, "", _TOP_KEYS)
    for key in ("profile", "budget", "student", "distill", "train", "search"):
        if key not in top:
            raise w.error(key, f"is required (the file needs the sections {', '.join(_TOP_KEYS[1:])})")
    profile = get_profile(w.value(top, "profile", "", Field("str", choices=tuple(sorted(PROFILES)))))
    split = _parse_split(w, top.get("split"))
    budget = _parse_budget(w, top.get("budget"))
    sections = _parse_params(w, top)
    _check_student(w, sections["student"])
    if "epochs" not in {p.name for p in sections["train"]}:
        raise w.error("train.epochs", "is required (fixed or searched): the number of training epochs per trial")
    _check_train_against_profile(w, sections["train"], profile)
    search = _parse_search(w, top.get("search"))
    references = parse_references(w, top.get("references", MISSING))
    description = top.get("description") or ""
    if not isinstance(description, str):
        raise w.error("description", f"must be a string, got {fmt(description)}")
    return SearchSpec(source=source, text=text, profile=profile, split=split, budget=budget,
                      student=sections["student"], distill=sections["distill"], train=sections["train"],
                      search=search, description=description, references=references)


def with_num_samples(spec: SearchSpec, n: int) -> SearchSpec:
    """A copy of ``spec`` with ``search.num_samples`` replaced (its text rewritten so that search.yaml records it)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"num_samples must be a positive integer, got {quote(n)}", params=("num_samples",))
    return _with_value(spec, "search", "num_samples", n)


def with_subset(spec: SearchSpec, percent: int) -> SearchSpec:
    """A copy of ``spec`` with ``split.subset`` replaced (the DCASE 2024 training subset, in percent; search.yaml
    records it)."""
    return _with_value(spec, "split", "subset", SplitConfig(subset=percent).subset)


def _with_value(spec: SearchSpec, section: str, key: str, value: Any) -> SearchSpec:
    raw = yaml.safe_load(spec.text) or {}
    raw[section] = dict(raw.get(section) or {})
    raw[section][key] = value
    text = (
        f"# search file {spec.source} (sha256 {spec.sha256[:16]}) with {section}.{key} set to {value} "
        "when the run started\n" + yaml.safe_dump(raw, sort_keys=False)
    )
    return parse_space(text, source=spec.source)
