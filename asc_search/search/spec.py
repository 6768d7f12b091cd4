"""What a validated search file is (:class:`SearchSpec`), what one proposal drawn from it is (:class:`Proposal`) and
what it costs (:class:`Cost`).

Parsing and validating the YAML is :mod:`asc_search.search.space`; everything here works on values already checked.
A :class:`SearchSpec` draws proposals define-by-run from an Optuna trial (:meth:`SearchSpec.sample`) and costs a
student against the budget before any training (:meth:`SearchSpec.cost`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .._io import jsonable
from ..config import Budget, FeatureProfile, SplitConfig
from ..errors import BudgetError, ConfigError, quote

__all__ = [
    "MISSING",
    "OBJECTIVES",
    "SAMPLERS",
    "SCORE_PRECISIONS",
    "EMBED_BLOCK_CHOICES",
    "ParamSpec",
    "SearchSettings",
    "SearchSpec",
    "Proposal",
    "Cost",
    "resolve_embed_block",
]

#: Objectives a search may optimise: accuracy is maximised, the two cost figures minimised.
OBJECTIVES: dict[str, str] = {"val_macro_accuracy": "max", "macs": "min", "param_bytes": "min"}
SAMPLERS = ("tpe", "random", "nsga2")
#: What a completed trial is ranked by: its float32 validation macro accuracy, or that of its deployed graph (a
#: post-training quantisation of its best epoch at the budget's param_dtype, scored with onnxruntime).
SCORE_PRECISIONS = ("float", "deployed")
#: Which student block's feature map is matched to the teacher embedding (relative to the proposal's depth).
EMBED_BLOCK_CHOICES = ("last", "penultimate")


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


#: "No value given" (a conditional parameter without ``default:`` falls back to the config's own default).
MISSING: Any = _MissingType()


# --------------------------------------------------------------------------------------------------------------
# Parameters and settings
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
    default: Any = MISSING  # value when ``when`` does not hold (MISSING: the config's own default)

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def searched(self) -> bool:
        return self.type != "fixed"

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(name, MISSING) in allowed for name, allowed in self.when)

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
        if self.default is not MISSING:
            out["default"] = self.default
        return out


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
    score_precision: str = "float"  # float | deployed: see SCORE_PRECISIONS

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


# --------------------------------------------------------------------------------------------------------------
# Proposals and their cost
# --------------------------------------------------------------------------------------------------------------
def resolve_embed_block(choice: str | None, n_blocks: tuple[int, ...]) -> str:
    """Block name (``b<k>``) for an ``embed_block`` choice given blocks per stage; None means the last block."""
    total = sum(n_blocks)
    if choice in (None, "last"):
        return f"b{total}"
    if choice == "penultimate":
        return f"b{max(1, total - 1)}"
    raise ConfigError(f"embed_block must be one of {', '.join(EMBED_BLOCK_CHOICES)}, got {quote(choice)}")


@dataclass(frozen=True)
class Proposal:
    """One candidate: the three configs a trial needs, and the searched values that produced them."""

    student: Any  # asc_search.models.student.StudentConfig
    distill: Any  # asc_search.training.losses.DistillConfig
    train: Any  # asc_search.training.loop.TrainConfig
    params: dict[str, Any] = field(default_factory=dict)  # searched parameter values, by Optuna name

    def to_dict(self) -> dict[str, Any]:
        return {
            "student": jsonable(self.student.to_dict()),
            "distill": jsonable(self.distill.to_dict()),
            "train": jsonable(self.train.to_dict()),
            "params": jsonable(dict(self.params)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proposal:
        """Rebuild a proposal from :meth:`to_dict` output (e.g. the ``config`` column of trials.parquet)."""
        from ..models.student import StudentConfig
        from ..training.loop import TrainConfig
        from ..training.losses import DistillConfig

        return cls(
            student=StudentConfig.from_dict(dict(data["student"])),
            distill=DistillConfig.from_dict(dict(data["distill"])),
            train=TrainConfig.from_dict(dict(data["train"])),
            params=dict(data.get("params", {})),
        )


@dataclass(frozen=True)
class Cost:
    """What a proposal costs, measured before any training."""

    params: int
    param_bytes: int  # the DCASE count: params x bytes of param_dtype
    macs: int
    passed: bool
    constraints: dict[str, float]  # relative excess per limit: > 0 means over budget
    seconds: float = 0.0
    counter: str = "torchinfo"  # who counted: "analytic" (rejected from the config alone) or "torchinfo"
    deployed_param_bytes: int | None = None  # the deployed graph's weights at param_dtype (BatchNorm folded)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Lowest:
    """A trial-like object answering every ``suggest_*`` with the low end of its range (the smallest of numeric
    choices, else the first choice): :meth:`SearchSpec.smallest_student`."""

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return low

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        return low

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        numbers = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        return min(numbers) if len(numbers) == len(choices) else choices[0]


def _student_default(name: str) -> Any:
    from ..models.student import StudentConfig

    f = next(f for f in dataclasses.fields(StudentConfig) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpec:
    """A validated search file (made by :func:`asc_search.search.space.parse_space`)."""

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
    def searched_defaults(self) -> dict[str, Any]:
        """Searched conditional parameters with a ``default:`` -> that default (what a proposal holds when the
        condition is false)."""
        return {p.name: p.default for p in self.params if p.when and p.default is not MISSING}

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

    @property
    def needs_teacher(self) -> bool:
        """Whether any proposal may distil (a searched or positive kd_weight / emb_weight)."""
        return any(p.name in ("kd_weight", "emb_weight") and (p.searched or (p.value or 0) > 0) for p in self.distill)

    def with_num_samples(self, n: int) -> SearchSpec:
        """A copy with ``search.num_samples`` replaced (its text rewritten so that search.yaml records it)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {quote(n)}", params=("num_samples",))
        return self._with("search", "num_samples", n)

    def with_subset(self, percent: int) -> SearchSpec:
        """A copy with ``split.subset`` replaced (the DCASE 2024 training subset, in percent; search.yaml records it)."""
        return self._with("split", "subset", SplitConfig(subset=percent).subset)

    def _with(self, section: str, key: str, value: Any) -> SearchSpec:
        from .space import parse_space

        raw = yaml.safe_load(self.text) or {}
        raw[section] = dict(raw.get(section) or {})
        raw[section][key] = value
        text = (
            f"# search file {self.source} (sha256 {self.sha256[:16]}) with {section}.{key} set to {value} "
            "when the run started\n" + yaml.safe_dump(raw, sort_keys=False)
        )
        return parse_space(text, source=self.source)

    # ---------------------------------------------------------------- sampling
    def sample(self, trial: Any, n_classes: int = 10, in_channels: int = 1, trial_seed: int | None = None) -> Proposal:
        """Define-by-run: draw one proposal from ``trial`` (an ``optuna.Trial``/``FrozenTrial``-like object).

        Cheap: no model is built here (costing is :meth:`cost`).
        """
        from ..training.loop import TrainConfig
        from ..training.losses import DistillConfig

        sections, sampled = self._draw(trial)
        distill = dict(sections["distill"])
        # Search-only switches of the distill section: whether to match embeddings at all, and at which block.
        use_embedding = distill.pop("use_embedding", True)
        embed_block = distill.pop("embed_block", "last")
        if not use_embedding:
            distill["emb_weight"] = 0.0
        student = self._student_config(sections["student"], embed_block, n_classes, in_channels)
        train = dict(sections["train"])
        if trial_seed is not None:
            train["seed"] = int(trial_seed)
        train["device"] = "cuda" if self.search.gpus_per_trial > 0 else "cpu"
        train["num_threads"] = max(1, int(self.search.cpus_per_trial))
        return Proposal(student=student, distill=DistillConfig.from_dict(distill),
                        train=TrainConfig.from_dict(train), params=sampled)

    def _draw(self, trial: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Every parameter's value by section (conditions applied), and the searched values by Optuna name."""
        values: dict[str, Any] = {}
        sampled: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {"student": {}, "distill": {}, "train": {}}
        for p in self.params:
            if p.name == "blocks_per_stage":  # drawn once per stage, as blocks_s1 .. blocks_s<n_stages>
                blocks = []
                for i in range(1, values["n_stages"] + 1):
                    v = p.suggest(trial, name=f"blocks_s{i}")
                    if p.searched:
                        sampled[f"blocks_s{i}"] = v
                    blocks.append(int(v))
                sections["student"]["n_blocks"] = tuple(blocks)
                continue
            if not p.active(values):
                if p.default is not MISSING:
                    values[p.name] = sections[p.section][p.name] = p.default
                continue
            v = p.suggest(trial)
            if p.searched:
                sampled[p.name] = v
            values[p.name] = sections[p.section][p.name] = v
        return sections, sampled

    @staticmethod
    def _student_config(student: dict[str, Any], embed_block: str, n_classes: int, in_channels: int) -> Any:
        """The StudentConfig of the drawn student values (``n_stages`` dropped, strides cut to the blocks it has)."""
        from ..models.student import StudentConfig

        st = dict(student)
        st.pop("n_stages", None)
        n_blocks = tuple(int(b) for b in st.get("n_blocks", _student_default("n_blocks")))
        st["n_blocks"] = n_blocks
        # Strides of blocks this proposal does not have are dropped (the file's, or StudentConfig's defaults).
        names = {f"b{i}" for i in range(1, sum(n_blocks) + 1)}
        strides = st["strides"] if "strides" in st else _student_default("strides")
        st["strides"] = {k: v for k, v in strides.items() if k in names}
        st["embed_block"] = resolve_embed_block(embed_block, n_blocks)
        st["n_classes"] = n_classes
        st["in_channels"] = in_channels
        return StudentConfig.from_dict(st)

    def smallest_student(self, n_classes: int = 10, in_channels: int = 1) -> Any:
        """The cheapest student the space can propose: every searched student parameter at its low end (the
        smallest of numeric choices). Every knob of the student family (width, multiplier, expansion, stages,
        blocks) costs more as it grows, so nothing in the space is cheaper."""
        return self.sample(_Lowest(), n_classes=n_classes, in_channels=in_channels).student

    def check_feasible(self, n_classes: int = 10) -> Cost:
        """The cost of :meth:`smallest_student`; BudgetError when even it is over the budget (no proposal could ever
        be trained: say so before anything else runs, not after ``max_consecutive_rejections`` proposals)."""
        student = self.smallest_student(n_classes)
        cost = self.cost(student)
        if not cost.passed:
            b = self.budget
            shown = ", ".join(f"{k} {v}" for k, v in student.to_dict().items()
                              if k in ("base_channels", "channels_multiplier", "expansion_rate", "n_blocks"))
            raise BudgetError(
                f"{self.source}: even the smallest student of this search space ({shown}) is over the budget: "
                f"{cost.param_bytes:,} bytes at {b.param_dtype}"
                + (f" ({cost.deployed_param_bytes:,} in its deployed graph)" if cost.deployed_param_bytes else "")
                + f" (limit {b.max_param_bytes:,}) and {cost.macs:,} MACs "
                f"(limit {b.max_macs:,}); no proposal could ever be trained: lower the student ranges' low ends or "
                "raise the budget"
            )
        return cost

    def cost(self, student: Any) -> Cost:
        """Params, parameter bytes and MACs of a student config against the budget; no training (an over-budget config
        is rejected by the analytic counter in ~0.1 ms, a feasible one confirmed with torchinfo in ~20 ms).

        Feasible = both byte figures (the DCASE count and the deployed graph's weights) within ``max_param_bytes``
        and the MACs within ``max_macs``; the ``param_bytes`` constraint is the larger byte figure's excess."""
        from ..complexity import cost_student

        t0 = time.perf_counter()
        report = cost_student(student, self.input_shape, self.budget)
        c = report.complexity
        deployed = c.deployed_param_bytes
        return Cost(
            params=int(c.params),
            param_bytes=int(c.param_bytes),
            macs=int(c.macs),
            passed=bool(report.passed),
            constraints={
                "param_bytes": max(c.param_bytes, deployed or 0) / self.budget.max_param_bytes - 1.0,
                "macs": c.macs / self.budget.max_macs - 1.0,
            },
            seconds=time.perf_counter() - t0,
            counter=str(report.counter),
            deployed_param_bytes=None if deployed is None else int(deployed),
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
