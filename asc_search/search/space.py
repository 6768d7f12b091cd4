"""Search-space files (YAML) -> a validated :class:`SearchSpec`; proposals sampled define-by-run from an Optuna trial;
costing of a proposal before any training.

A search file has these top-level sections (``search_spaces/quick.yaml`` is a commented example)::

    profile: quick                      # feature profile; must equal the feature cache's profile
    split: {val_fraction: 0.2, seed: 0} # validation carved from train by recording location
    budget: {max_param_bytes: 128000, param_dtype: int8, max_macs: 30000000}
    student:  {...}                     # architecture parameters (StudentConfig fields + n_stages/blocks_per_stage)
    distill:  {...}                     # kd_weight, temperature, emb_weight, emb_loss, embed_block
    train:    {...}                     # lr, weight_decay, batch_size, epochs (+ any other TrainConfig field, fixed)
    search:   {...}                     # sampler, seed, num_samples, max_concurrent, asha, resources, objectives

A parameter is either a plain value (fixed) or a distribution::

    base_channels: {type: int, low: 8, high: 48, step: 4}
    lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    emb_loss: {type: categorical, choices: [mse, cosine]}
    emb_weight: {type: float, low: 0.1, high: 10, log: true, when: {use_embedding: true}, default: 0.0}

``when`` makes a parameter conditional on parameters declared before it (the proposal gets ``default``, or the
config's own default, when the condition does not hold). ``n_stages`` + ``blocks_per_stage`` are conditional by
construction: one ``blocks_s<i>`` parameter per stage that the proposal has.

Every mistake raises :class:`~asc_search.errors.ConfigError` naming the file, the key path (``student.base_channels.low``)
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._io import jsonable
from ..config import PROFILES, Budget, FeatureProfile, SplitConfig, get_profile
from ..errors import ConfigError

__all__ = [
    "ParamSpec",
    "SearchSettings",
    "SearchSpec",
    "Proposal",
    "Cost",
    "OBJECTIVES",
    "SAMPLERS",
    "EMBED_BLOCK_CHOICES",
    "load_space",
    "resolve_space",
    "builtin_spaces",
    "builtin_spaces_dir",
    "parse_space",
    "resolve_embed_block",
]

#: Objectives a search may optimise: accuracy is maximised, the two cost figures minimised.
OBJECTIVES: dict[str, str] = {"val_macro_accuracy": "max", "macs": "min", "param_bytes": "min"}
SAMPLERS = ("tpe", "random", "nsga2")
#: Which student block's feature map is matched to the teacher embedding (relative to the proposal's depth).
EMBED_BLOCK_CHOICES = ("last", "penultimate")
PARAM_TYPES = ("int", "float", "categorical")


class _MissingType:
    """"No value" sentinel that survives pickling (Tune pickles the searcher, and with it the spec)."""

    _instance: _MissingType | None = None

    def __new__(cls) -> _MissingType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> tuple[Any, ...]:
        return (_MissingType, ())

    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Any = _MissingType()


# --------------------------------------------------------------------------------------------------------------
# Field rules: what each known parameter accepts (checked on fixed values, bounds and choices alike).
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    kind: str  # "int" | "float" | "str" | "bool" | "list" | "mapping"
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple[Any, ...] | None = None
    searchable: bool = True

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        what = {
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool": "true or false",
            "any": "a value accepted by TrainConfig",
        }.get(
            self.kind, f"a {self.kind}"
        )
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_exclusive else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return what + (" " + " and ".join(parts) if parts else "")

    def ok(self, value: Any) -> bool:
        if self.kind == "any":
            return value is not None
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return False
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
        elif self.kind == "str":
            if not isinstance(value, str):
                return False
        elif self.kind == "bool":
            if not isinstance(value, bool):
                return False
        if self.choices is not None and value not in self.choices:
            return False
        if self.kind in ("int", "float"):
            if self.min is not None and (value <= self.min if self.min_exclusive else value < self.min):
                return False
            if self.max is not None and value > self.max:
                return False
        return True


_STUDENT_RULES: dict[str, _Rule] = {
    "base_channels": _Rule("int", min=1, max=1024),
    "channels_multiplier": _Rule("float", min=0, min_exclusive=True, max=8),
    "expansion_rate": _Rule("float", min=1, max=16),
    "n_stages": _Rule("int", min=1, max=8),
    "blocks_per_stage": _Rule("int", min=1, max=16),
    "n_blocks": _Rule("list", searchable=False),
    "strides": _Rule("mapping", searchable=False),
}
_DISTILL_RULES: dict[str, _Rule] = {
    "kd_weight": _Rule("float", min=0, max=1),
    "temperature": _Rule("float", min=0, min_exclusive=True, max=100),
    "emb_weight": _Rule("float", min=0, max=1e6),
    "emb_loss": _Rule("str", choices=("mse", "cosine")),
    "embed_block": _Rule("str", choices=EMBED_BLOCK_CHOICES),
    # A switch other parameters may depend on (``when: {use_embedding: true}``); not passed to DistillConfig.
    "use_embedding": _Rule("bool"),
}
_TRAIN_RULES: dict[str, _Rule] = {
    "lr": _Rule("float", min=0, min_exclusive=True, max=10),
    "weight_decay": _Rule("float", min=0, max=1),
    "batch_size": _Rule("int", min=1, max=65536),
    "epochs": _Rule("int", min=1, max=100000),
}
#: TrainConfig fields the search sets itself (per trial) and a file must not set.
_TRAIN_RESERVED = ("seed", "device", "num_threads")
_SECTION_RULES = {"student": _STUDENT_RULES, "distill": _DISTILL_RULES, "train": _TRAIN_RULES}
_TOP_KEYS = ("description", "profile", "split", "budget", "student", "distill", "train", "search")


def _fmt(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, bool)) or value is None else repr(value)


class _Ctx:
    """Where we are in the file, so that every message names it."""

    def __init__(self, source: str):
        self.source = source

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}")

    def mapping(self, value: Any, path: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(path, f"must be a mapping (key: value lines), got {type(value).__name__} {_fmt(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(path, f"keys must be strings, got {key!r}")
        return dict(value)

    def keys(self, mapping: dict, path: str, allowed: tuple[str, ...] | list[str]) -> None:
        unknown = [k for k in mapping if k not in allowed]
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise self.error(where, f"unknown key; allowed keys here: {', '.join(allowed)}")

    def value(self, mapping: dict, key: str, path: str, rule: _Rule, default: Any = _MISSING) -> Any:
        full = f"{path}.{key}" if path else key
        if key not in mapping or mapping[key] is None:
            if default is _MISSING:
                raise self.error(full, f"is required: {rule.describe()}")
            return default
        value = mapping[key]
        if rule.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not rule.ok(value):
            raise self.error(full, f"must be {rule.describe()}, got {_fmt(value)}")
        return value


# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSpec:
    """One parameter of the space: fixed (``type == "fixed"``) or an Optuna distribution."""

    name: str  # the Optuna parameter name (unique across sections)
    section: str  # student | distill | train
    type: str  # fixed | int | float | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    value: Any = None  # the value when fixed
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (param, allowed values) pairs, all must hold
    default: Any = _MISSING  # value when ``when`` does not hold (_MISSING: the config's own default)

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(name, _MISSING) in allowed for name, allowed in self.when)

    def suggest(self, trial: Any, name: str | None = None) -> Any:
        """Sample this parameter from ``trial`` (an ``optuna.Trial``) under ``name`` (default: own name)."""
        name = name or self.name
        if self.type == "fixed":
            return self.value
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for key in ("low", "high", "step", "choices", "value"):
            if getattr(self, key) is not None:
                out[key] = list(getattr(self, key)) if key == "choices" else getattr(self, key)
        if self.log:
            out["log"] = True
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when}
        if self.default is not _MISSING:
            out["default"] = self.default
        return out


def _parse_param(ctx: _Ctx, section: str, name: str, raw: Any, rule: _Rule, earlier: dict[str, ParamSpec]) -> ParamSpec:
    path = f"{section}.{name}"
    if rule.kind in ("list", "mapping"):
        # Structured fixed values (n_blocks, strides) are validated by the caller.
        return ParamSpec(name=name, section=section, type="fixed", value=raw)
    if not isinstance(raw, Mapping):
        if raw is None or isinstance(raw, list):
            raise ctx.error(
                path,
                f"must be a fixed value ({rule.describe()}) or a mapping with type: {' | '.join(PARAM_TYPES)}; "
                f"got {_fmt(raw)} (a list of options is written {{type: categorical, choices: [...]}})",
            )
        value = ctx.value({name: raw}, name, section, rule)
        return ParamSpec(name=name, section=section, type="fixed", value=value)

    spec = ctx.mapping(raw, path)
    ptype = spec.get("type")
    if ptype not in PARAM_TYPES + ("fixed",):
        raise ctx.error(f"{path}.type", f"must be one of {', '.join(PARAM_TYPES + ('fixed',))}, got {_fmt(ptype)}")
    if not rule.searchable:
        raise ctx.error(path, "cannot be searched; give a fixed value")
    common = ("type", "when", "default")
    kwargs: dict[str, Any] = {}
    if ptype == "fixed":
        ctx.keys(spec, path, common + ("value",))
        kwargs["value"] = ctx.value(spec, "value", path, rule)
    elif ptype in ("int", "float"):
        ctx.keys(spec, path, common + ("low", "high", "step", "log"))
        if rule.kind not in ("int", "float", "any"):
            raise ctx.error(f"{path}.type", f"must be categorical or fixed for this parameter ({rule.describe()})")
        if ptype == "float" and rule.kind == "int":
            raise ctx.error(f"{path}.type", "must be int (this parameter takes integers)")
        num_rule = dataclasses.replace(rule, kind=ptype)
        low = ctx.value(spec, "low", path, num_rule)
        high = ctx.value(spec, "high", path, num_rule)
        if low > high:
            raise ctx.error(f"{path}.low", f"must be <= high ({_fmt(high)}), got {_fmt(low)}")
        log = ctx.value(spec, "log", path, _Rule("bool"), default=False)
        step_rule = _Rule(ptype, min=0, min_exclusive=True)
        step = ctx.value(spec, "step", path, step_rule, default=None)
        if log and low <= 0:
            raise ctx.error(f"{path}.low", f"must be > 0 when log: true, got {_fmt(low)}")
        if log and step is not None and step != 1:
            raise ctx.error(f"{path}.step", "cannot be combined with log: true (Optuna samples log ranges without a step)")
        if step is not None and ptype == "int" and (high - low) % step:
            raise ctx.error(f"{path}.step", f"must divide high - low ({high - low}), got {step}")
        kwargs.update(low=low, high=high, step=step, log=log)
    else:  # categorical
        ctx.keys(spec, path, common + ("choices",))
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ctx.error(f"{path}.choices", f"must be a non-empty list, got {_fmt(choices)}")
        checked = []
        for i, choice in enumerate(choices):
            checked.append(ctx.value({f"choices[{i}]": choice}, f"choices[{i}]", path, rule))
        if len(set(map(repr, checked))) != len(checked):
            raise ctx.error(f"{path}.choices", f"must not repeat a value, got {_fmt(choices)}")
        kwargs["choices"] = tuple(checked)

    when: list[tuple[str, tuple[Any, ...]]] = []
    if "when" in spec:
        cond = ctx.mapping(spec["when"], f"{path}.when")
        if not cond:
            raise ctx.error(f"{path}.when", "must name at least one earlier parameter: {param: value or [values]}")
        for other, allowed in cond.items():
            if other not in earlier:
                raise ctx.error(
                    f"{path}.when.{other}",
                    "must name a parameter declared before this one; declared so far: "
                    + (", ".join(earlier) or "none"),
                )
            allowed_t = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            when.append((other, allowed_t))
    default = _MISSING
    if "default" in spec:
        if not when:
            raise ctx.error(f"{path}.default", "only makes sense together with when:")
        default = ctx.value(spec, "default", path, rule)
    return ParamSpec(name=name, section=section, type=ptype, when=tuple(when), default=default, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Search settings
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSettings:
    """The ``search:`` section."""

    sampler: str = "tpe"  # tpe | random | nsga2
    seed: int = 0  # sampler seed; trial i trains with seed + i
    num_samples: int = 10  # number of TRAINED trials (rejected proposals do not count)
    max_concurrent: int = 2  # trials running at the same time
    max_consecutive_rejections: int = 500  # give up when this many proposals in a row are over budget
    n_startup_trials: int = 5  # random proposals before TPE models the space (rejections count)
    population_size: int = 20  # NSGA-II population
    asha_enabled: bool = True  # ASHA early stopping on val_macro_accuracy
    grace_period: int = 1  # epochs before ASHA may stop a trial
    reduction_factor: int = 2  # ASHA halving rate
    cpus_per_trial: float = 1.0  # CPUs reserved per trial (torch threads = max(1, int(cpus)))
    gpus_per_trial: float = 0.0  # GPUs per trial, fractional allowed (0.25 = four trials share one GPU)
    max_failures: int = 1  # retries of a crashed trial (from its last checkpoint); a diverged trial is not retried
    objectives: tuple[str, ...] = ("val_macro_accuracy",)

    @property
    def directions(self) -> list[str]:
        return ["maximize" if OBJECTIVES[o] == "max" else "minimize" for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        return d


def _parse_search(ctx: _Ctx, raw: Any) -> SearchSettings:
    s = ctx.mapping(raw, "search")
    ctx.keys(
        s,
        "search",
        (
            "sampler",
            "seed",
            "num_samples",
            "max_concurrent",
            "max_consecutive_rejections",
            "n_startup_trials",
            "population_size",
            "asha",
            "resources",
            "max_failures",
            "objectives",
        ),
    )
    d = SearchSettings()
    kw: dict[str, Any] = {}
    kw["sampler"] = ctx.value(s, "sampler", "search", _Rule("str", choices=SAMPLERS), d.sampler)
    kw["seed"] = ctx.value(s, "seed", "search", _Rule("int", min=0), d.seed)
    kw["num_samples"] = ctx.value(s, "num_samples", "search", _Rule("int", min=1), d.num_samples)
    kw["max_concurrent"] = ctx.value(s, "max_concurrent", "search", _Rule("int", min=1), d.max_concurrent)
    kw["max_consecutive_rejections"] = ctx.value(
        s, "max_consecutive_rejections", "search", _Rule("int", min=1), d.max_consecutive_rejections
    )
    kw["n_startup_trials"] = ctx.value(s, "n_startup_trials", "search", _Rule("int", min=0), d.n_startup_trials)
    kw["population_size"] = ctx.value(s, "population_size", "search", _Rule("int", min=2), d.population_size)
    kw["max_failures"] = ctx.value(s, "max_failures", "search", _Rule("int", min=0, max=10), d.max_failures)
    asha = ctx.mapping(s.get("asha"), "search.asha")
    ctx.keys(asha, "search.asha", ("enabled", "grace_period", "reduction_factor"))
    kw["asha_enabled"] = ctx.value(asha, "enabled", "search.asha", _Rule("bool"), d.asha_enabled)
    kw["grace_period"] = ctx.value(asha, "grace_period", "search.asha", _Rule("int", min=1), d.grace_period)
    kw["reduction_factor"] = ctx.value(
        asha, "reduction_factor", "search.asha", _Rule("int", min=2), d.reduction_factor
    )
    res = ctx.mapping(s.get("resources"), "search.resources")
    ctx.keys(res, "search.resources", ("cpus_per_trial", "gpus_per_trial"))
    kw["cpus_per_trial"] = float(
        ctx.value(res, "cpus_per_trial", "search.resources", _Rule("float", min=0, min_exclusive=True), 1.0)
    )
    kw["gpus_per_trial"] = float(ctx.value(res, "gpus_per_trial", "search.resources", _Rule("float", min=0), 0.0))
    if kw["gpus_per_trial"] > 1 and kw["gpus_per_trial"] != int(kw["gpus_per_trial"]):
        raise ctx.error(
            "search.resources.gpus_per_trial",
            f"must be a fraction <= 1 or a whole number of GPUs, got {kw['gpus_per_trial']:g}",
        )
    objectives = s.get("objectives", list(d.objectives))
    if isinstance(objectives, str):
        objectives = [objectives]
    if not isinstance(objectives, list) or not objectives:
        raise ctx.error("search.objectives", f"must be a non-empty list of {', '.join(OBJECTIVES)}, got {_fmt(objectives)}")
    for i, obj in enumerate(objectives):
        if obj not in OBJECTIVES:
            raise ctx.error(f"search.objectives[{i}]", f"must be one of {', '.join(OBJECTIVES)}, got {_fmt(obj)}")
    if objectives[0] != "val_macro_accuracy" or len(set(objectives)) != len(objectives):
        raise ctx.error(
            "search.objectives",
            "must start with val_macro_accuracy and may add macs and/or param_bytes once each "
            f"(a Pareto search), got {_fmt(objectives)}",
        )
    kw["objectives"] = tuple(objectives)
    return SearchSettings(**kw)


# --------------------------------------------------------------------------------------------------------------
# Proposals and their cost
# --------------------------------------------------------------------------------------------------------------
def resolve_embed_block(choice: str | None, n_blocks: tuple[int, ...]) -> str | None:
    """Block name (``b<k>``) for an ``embed_block`` choice given blocks per stage; None means the last block."""
    total = sum(n_blocks)
    if choice in (None, "last"):
        return f"b{total}"
    if choice == "penultimate":
        return f"b{max(1, total - 1)}"
    raise ConfigError(f"embed_block must be one of {', '.join(EMBED_BLOCK_CHOICES)}, got {choice!r}")


@dataclass(frozen=True)
class Proposal:
    """One candidate: the three configs a trial needs, and the searched values that produced them."""

    student: Any  # asc_search.models.student.StudentConfig
    distill: Any  # asc_search.distill.DistillConfig
    train: Any  # asc_search.train.TrainConfig
    params: dict[str, Any] = field(default_factory=dict)  # searched parameter values, by Optuna name

    def to_dict(self) -> dict[str, Any]:
        return {
            "student": jsonable(self.student.to_dict() if hasattr(self.student, "to_dict") else dataclasses.asdict(self.student)),
            "distill": jsonable(dataclasses.asdict(self.distill)),
            "train": jsonable(dataclasses.asdict(self.train)),
            "params": jsonable(dict(self.params)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proposal:
        """Rebuild a proposal from :meth:`to_dict` output (e.g. the ``config`` column of trials.parquet)."""
        from ..models.student import StudentConfig
        from ..training.losses import DistillConfig

        return cls(
            student=StudentConfig.from_dict(dict(data["student"])),
            distill=DistillConfig.from_dict(dict(data["distill"])),
            train=_train_config(dict(data["train"])),
            params=dict(data.get("params", {})),
        )


def _train_config(data: dict[str, Any]) -> Any:
    from ..training.loop import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    kw = {}
    for key, value in data.items():
        if key in fields and isinstance(value, list):
            value = tuple(value)
        kw[key] = value
    return TrainConfig(**kw)


@dataclass(frozen=True)
class Cost:
    """What a proposal costs, measured before any training."""

    params: int
    param_bytes: int
    macs: int
    passed: bool
    constraints: dict[str, float]  # relative excess per limit: > 0 means over budget
    seconds: float = 0.0
    counter: str = "torchinfo"  # who counted: "analytic" (rejected from the config alone) or "torchinfo"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpec:
    """A validated search file."""

    source: str  # the file it came from (for messages)
    text: str  # the file's text as read
    profile: FeatureProfile
    split: SplitConfig
    budget: Budget
    student: tuple[ParamSpec, ...]
    distill: tuple[ParamSpec, ...]
    train: tuple[ParamSpec, ...]
    search: SearchSettings
    description: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def params(self) -> tuple[ParamSpec, ...]:
        return self.student + self.distill + self.train

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one clip as the student sees it: (1, 1, n_mels, n_frames)."""
        return (1, 1, *self.profile.shape)

    @property
    def max_epochs(self) -> int:
        spec = next(p for p in self.train if p.name == "epochs")
        if spec.type == "fixed":
            return int(spec.value)
        if spec.type == "categorical":
            return int(max(spec.choices))
        return int(spec.high)

    def with_num_samples(self, n: int) -> SearchSpec:
        """A copy with ``search.num_samples`` replaced (its text rewritten so that search.yaml records it)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"--num-samples must be a positive integer, got {n!r}")
        raw = yaml.safe_load(self.text) or {}
        raw.setdefault("search", {})
        raw["search"] = dict(raw["search"] or {})
        raw["search"]["num_samples"] = n
        text = (
            f"# search file {self.source} (sha256 {self.sha256[:16]}) with search.num_samples set to {n} "
            "from the command line\n" + yaml.safe_dump(raw, sort_keys=False)
        )
        return parse_space(text, source=self.source)

    # ---------------------------------------------------------------- sampling
    def sample(self, trial: Any, n_classes: int = 10, in_channels: int = 1, trial_seed: int | None = None) -> Proposal:
        """Define-by-run: draw one proposal from ``trial`` (an ``optuna.Trial``/``FrozenTrial``-like object).

        Cheap: no model is built here (costing is :meth:`cost`).
        """
        from ..models.student import StudentConfig
        from ..training.losses import DistillConfig

        values: dict[str, Any] = {}
        sampled: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {"student": {}, "distill": {}, "train": {}}
        for p in self.params:
            if p.name == "blocks_per_stage":
                n_stages = values["n_stages"]
                blocks = []
                for i in range(1, n_stages + 1):
                    v = p.suggest(trial, name=f"blocks_s{i}")
                    if p.type != "fixed":
                        sampled[f"blocks_s{i}"] = v
                    blocks.append(int(v))
                values["n_blocks"] = tuple(blocks)
                continue
            if not p.active(values):
                if p.default is not _MISSING:
                    values[p.name] = p.default
                    sections[p.section][p.name] = p.default
                continue
            v = p.suggest(trial)
            if p.type != "fixed":
                sampled[p.name] = v
            values[p.name] = v
            sections[p.section][p.name] = v

        st = sections["student"]
        st.pop("n_stages", None)
        if "n_blocks" in values:
            st["n_blocks"] = tuple(int(b) for b in values["n_blocks"])
        n_blocks = tuple(st.get("n_blocks", _student_default("n_blocks")))
        # Strides of blocks this proposal does not have are dropped (the file's, or StudentConfig's defaults).
        names = {f"b{i}" for i in range(1, sum(n_blocks) + 1)}
        strides = st["strides"] if "strides" in st else _student_default("strides")
        st["strides"] = {k: tuple(v) for k, v in strides.items() if k in names}
        dist = sections["distill"]
        use_embedding = dist.pop("use_embedding", True)
        embed_choice = dist.pop("embed_block", "last")
        if not use_embedding:
            dist["emb_weight"] = 0.0
        st["embed_block"] = resolve_embed_block(embed_choice, n_blocks)
        st["n_classes"] = n_classes
        st["in_channels"] = in_channels
        student = StudentConfig.from_dict(st)
        distill = DistillConfig.from_dict(dist)
        tr = dict(sections["train"])
        if trial_seed is not None:
            tr["seed"] = int(trial_seed)
        tr["device"] = "cuda" if self.search.gpus_per_trial > 0 else "cpu"
        tr["num_threads"] = max(1, int(self.search.cpus_per_trial))
        train = _train_config(tr)
        return Proposal(student=student, distill=distill, train=train, params=sampled)

    def cost(self, student: Any) -> Cost:
        """Params, parameter bytes and MACs of a student config against the budget; no training (an over-budget config
        is rejected by the analytic counter in ~0.1 ms, a feasible one confirmed with torchinfo in ~20 ms)."""
        import time

        from ..complexity import cost_student

        t0 = time.perf_counter()
        report = cost_student(student, self.input_shape, self.budget)
        figures = _figures(report)
        constraints = {
            "param_bytes": figures["param_bytes"] / self.budget.max_param_bytes - 1.0,
            "macs": figures["macs"] / self.budget.max_macs - 1.0,
        }
        return Cost(
            params=int(figures["params"]),
            param_bytes=int(figures["param_bytes"]),
            macs=int(figures["macs"]),
            passed=bool(report.passed),
            constraints=constraints,
            seconds=time.perf_counter() - t0,
            counter=str(report.counter),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "split": dataclasses.asdict(self.split),
            "budget": self.budget.to_dict(),
            "student": {p.name: p.to_dict() for p in self.student},
            "distill": {p.name: p.to_dict() for p in self.distill},
            "train": {p.name: p.to_dict() for p in self.train},
            "search": self.search.to_dict(),
        }


def _student_default(name: str) -> Any:
    from ..models.student import StudentConfig

    for f in dataclasses.fields(StudentConfig):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()  # type: ignore[misc]
    raise KeyError(name)


def _figures(report: Any) -> dict[str, float]:
    """params / param_bytes / macs out of a complexity BudgetReport."""
    out: dict[str, float] = {}
    comp = getattr(report, "complexity", None)
    if comp is not None:
        for key in ("params", "param_bytes", "macs"):
            out[key] = getattr(comp, key)
        return out
    d = report.to_dict()
    for key in ("params", "param_bytes", "macs"):
        if key in d:
            out[key] = d[key]
    for row in getattr(report, "rows", ()):
        name = row[0]
        if name in ("params", "param_bytes", "macs") and name not in out:
            out[name] = row[1]
    missing = {"params", "param_bytes", "macs"} - set(out)
    if missing:
        raise RuntimeError(f"complexity report lacks {sorted(missing)}: {d}")
    return out


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
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the search file: {exc}") from None
    return parse_space(text, source=str(path))


def parse_space(text: str, source: str = "<search file>") -> SearchSpec:
    """Validate the YAML ``text`` of a search file (``source`` names it in messages)."""
    ctx = _Ctx(source)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
    if raw is None:
        raise ConfigError(f"{source}: the search file is empty; it needs the sections {', '.join(_TOP_KEYS[1:])}")
    top = ctx.mapping(raw, "(top level)")
    ctx.keys(top, "", _TOP_KEYS)
    for key in ("profile", "budget", "student", "distill", "train", "search"):
        if key not in top:
            raise ctx.error(key, f"is required (the file needs the sections {', '.join(_TOP_KEYS[1:])})")

    profile_name = ctx.value(top, "profile", "", _Rule("str", choices=tuple(sorted(PROFILES))))
    profile = get_profile(profile_name)

    split_raw = ctx.mapping(top.get("split"), "split")
    ctx.keys(split_raw, "split", ("val_fraction", "seed"))
    val_fraction = ctx.value(split_raw, "val_fraction", "split", _Rule("float", min=0, max=1, min_exclusive=True), 0.2)
    if val_fraction >= 1:
        raise ctx.error("split.val_fraction", f"must be strictly between 0 and 1, got {val_fraction!r}")
    split = SplitConfig(val_fraction=val_fraction, seed=ctx.value(split_raw, "seed", "split", _Rule("int", min=0), 0))

    braw = ctx.mapping(top.get("budget"), "budget")
    ctx.keys(braw, "budget", ("max_param_bytes", "param_dtype", "max_macs"))
    from ..config import DTYPE_BYTES

    budget = Budget(
        max_param_bytes=ctx.value(braw, "max_param_bytes", "budget", _Rule("int", min=1)),
        param_dtype=ctx.value(braw, "param_dtype", "budget", _Rule("str", choices=tuple(DTYPE_BYTES))),
        max_macs=ctx.value(braw, "max_macs", "budget", _Rule("int", min=1)),
    )

    earlier: dict[str, ParamSpec] = {}
    sections: dict[str, tuple[ParamSpec, ...]] = {}
    for section in ("student", "distill", "train"):
        sec = ctx.mapping(top.get(section), section)
        rules = dict(_SECTION_RULES[section])
        if section == "train":
            rules.update(_extra_train_rules(ctx))
            for reserved in _TRAIN_RESERVED:
                if reserved in sec:
                    raise ctx.error(
                        f"train.{reserved}",
                        "is set by the search itself (seed: search.seed + trial number; device and num_threads: from "
                        "search.resources); remove it",
                    )
        ctx.keys(sec, section, tuple(rules))
        specs = []
        for name, raw_param in sec.items():
            p = _parse_param(ctx, section, name, raw_param, rules[name], earlier)
            specs.append(p)
            earlier[name] = p
        sections[section] = tuple(specs)

    _check_student(ctx, sections["student"])
    _check_required(ctx, sections)
    _check_train_against_profile(ctx, sections["train"], profile)
    search = _parse_search(ctx, top.get("search"))
    description = top.get("description") or ""
    if not isinstance(description, str):
        raise ctx.error("description", f"must be a string, got {_fmt(description)}")
    return SearchSpec(
        source=source,
        text=text,
        profile=profile,
        split=split,
        budget=budget,
        student=sections["student"],
        distill=sections["distill"],
        train=sections["train"],
        search=search,
        description=description,
    )


def _extra_train_rules(ctx: _Ctx) -> dict[str, _Rule]:
    """Any other TrainConfig field may be given as a fixed value (validated by TrainConfig itself)."""
    try:
        from ..training.loop import TrainConfig
    except ImportError:  # pragma: no cover - train module is part of the package
        return {}
    extra = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in _TRAIN_RULES or f.name in _TRAIN_RESERVED:
            continue
        extra[f.name] = _Rule("any")
    return extra


def _check_student(ctx: _Ctx, specs: tuple[ParamSpec, ...]) -> None:
    names = [p.name for p in specs]
    if ("n_stages" in names) != ("blocks_per_stage" in names):
        raise ctx.error(
            "student.n_stages" if "n_stages" not in names else "student.blocks_per_stage",
            "n_stages and blocks_per_stage go together (blocks_per_stage is drawn once per stage); give both, or a "
            "fixed n_blocks: [3, 2, 1]",
        )
    if "n_blocks" in names and "n_stages" in names:
        raise ctx.error("student.n_blocks", "give either n_blocks (fixed) or n_stages + blocks_per_stage, not both")
    if "n_stages" in names and names.index("n_stages") > names.index("blocks_per_stage"):
        raise ctx.error("student.blocks_per_stage", "must come after n_stages")
    for p in specs:
        if p.name in ("n_stages", "blocks_per_stage") and p.when:
            raise ctx.error(f"student.{p.name}.when", "the depth parameters cannot be conditional")
        if p.name == "n_blocks":
            v = p.value
            if not isinstance(v, list) or not v or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in v):
                raise ctx.error("student.n_blocks", f"must be a non-empty list of positive integers (blocks per stage), got {_fmt(v)}")
        if p.name == "strides":
            v = p.value
            ok = isinstance(v, Mapping) and all(
                isinstance(k, str)
                and k.startswith("b")
                and k[1:].isdigit()
                and isinstance(s, list)
                and len(s) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in s)
                for k, s in v.items()
            )
            if not ok:
                raise ctx.error(
                    "student.strides",
                    f"must map block names to [freq_stride, time_stride], e.g. {{b2: [2, 2], b4: [2, 1]}}, got {_fmt(v)}",
                )


def _check_train_against_profile(ctx: _Ctx, specs: tuple[ParamSpec, ...], profile: FeatureProfile) -> None:
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
                raise ctx.error(
                    f"train.{p.name}",
                    f"must be smaller than the {limit} {what} of profile {profile.name!r}, got {_fmt(v)}",
                )


def _check_required(ctx: _Ctx, sections: dict[str, tuple[ParamSpec, ...]]) -> None:
    names = {p.name for p in sections["train"]}
    if "epochs" not in names:
        raise ctx.error("train.epochs", "is required (fixed or searched): the number of training epochs per trial")
