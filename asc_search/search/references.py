"""Reference arms: named, fixed configurations trained in every search beside the sampled proposals, so that the
student a search exports is never worse on validation than a known recipe, and the user sees by how much it wins.

A search file's optional ``references:`` list (absent: :data:`DEFAULT_REFERENCES`; ``[]``: none)::

    references:
      - name: baseline_ce                                 # letters, digits, '_' and '-'; unique
        student: {preset: dcase2024_baseline, width: fit} # a student preset and/or StudentConfig fields
        distill: {kd_weight: 0.0}                         # DistillConfig fields (+ embed_block: last | penultimate)
        train: {}                                         # TrainConfig fields, overriding the rule below

* **Student**: the preset's config (``dcase2024_baseline``, the DCASE 2024 baseline, is also StudentConfig's
  default), then the StudentConfig fields given. ``width`` sets ``base_channels``: a number, or ``fit``: the largest
  multiple of 8 whose student fits the file's budget (parameter bytes at ``param_dtype`` and MACs on the profile's
  input), depth, multiplier, expansion and strides kept. ``n_classes`` and ``in_channels`` come from the cache.
* **Distillation**: none (DistillConfig's defaults), then the reference's ``distill:``.
* **Training** (the rule): the file's fixed ``train:`` values; each SEARCHED train parameter at the centre of its
  range (the geometric centre of a log range, the arithmetic centre of a linear one snapped to its step, the middle
  choice of a categorical, the lower one of two middles); ``epochs`` at its maximum; then the reference's own
  ``train:``. Seed, device and threads are set per trial as for every proposal.

The defaults: the DCASE 2024 baseline family (CP-Mobile) width-fitted to the budget, trained three ways:
``baseline_ce`` (cross-entropy only), ``baseline_kd`` (CP-JKU's DCASE 2023 recipe: 0.02 CE + 0.98 KD at T = 2) and
``baseline_kd_emb`` (the same + embedding matching, emb_weight 1.0, mse, on the last block: this tool's method).

A reference becomes a full :class:`~asc_search.search.spec.Proposal` (:func:`reference_proposal`), never a sample;
:func:`plan_references` costs them before a search; :func:`reference_params` gives the values Optuna records for it
(those inside the space's distributions), so that the sampler learns from the references too.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .rules import Where, fmt
from .spec import EMBED_BLOCK_CHOICES, MISSING, ParamSpec, Proposal, SearchSpec

__all__ = [
    "REFERENCE",
    "SEARCH",
    "Reference",
    "DEFAULT_REFERENCES",
    "STUDENT_PRESETS",
    "parse_references",
    "reference_train",
    "fit_width",
    "reference_proposal",
    "reference_params",
    "ReferencePlan",
    "plan_references",
    "enqueue_references",
]

#: A trial's ``kind``: a reference arm, or a proposal the sampler drew.
REFERENCE = "reference"
SEARCH = "search"
#: Presets a reference's student may start from (the student family).
STUDENT_PRESETS = ("dcase2024_baseline", "dcase2024_baseline_quick")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_STUDENT_SET = ("n_classes", "in_channels", "embed_block")  # set by the search itself, as for proposals
_TRAIN_SET = ("seed", "device", "num_threads")


@dataclass(frozen=True)
class Reference:
    """One reference arm as the search file gives it (validated)."""

    name: str
    student: Mapping[str, Any] = field(default_factory=dict)  # preset, width, StudentConfig fields
    distill: Mapping[str, Any] = field(default_factory=dict)  # DistillConfig fields + embed_block
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig overrides

    @property
    def needs_teacher(self) -> bool:
        return float(self.distill.get("kd_weight", 0.0)) > 0 or float(self.distill.get("emb_weight", 0.0)) > 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "student": dict(self.student), "distill": dict(self.distill),
                "train": dict(self.train)}


_BASELINE = {"preset": "dcase2024_baseline", "width": "fit"}
DEFAULT_REFERENCES: tuple[Reference, ...] = (
    Reference("baseline_ce", _BASELINE, {"kd_weight": 0.0, "emb_weight": 0.0}),
    Reference("baseline_kd", _BASELINE, {"kd_weight": 0.98, "temperature": 2.0, "emb_weight": 0.0}),
    Reference("baseline_kd_emb", _BASELINE, {"kd_weight": 0.98, "temperature": 2.0, "emb_weight": 1.0,
                                             "emb_loss": "mse", "embed_block": "last"}),
)


# ------------------------------------------------------------------------------------------------ reading


def parse_references(w: Where, raw: Any) -> tuple[Reference, ...]:
    """The ``references:`` list of a search file (``MISSING``: the key is absent -> the defaults)."""
    if raw is MISSING:
        return DEFAULT_REFERENCES
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise w.error("references", f"must be a list of {{name, student, distill, train}} mappings ([] for none), "
                                    f"got {fmt(raw)}")
    out: list[Reference] = []
    for i, item in enumerate(raw):
        path = f"references[{i}]"
        entry = w.mapping(item, path)
        w.keys(entry, path, ("name", "student", "distill", "train"))
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise w.error(f"{path}.name", f"must be a name of letters, digits, '_' and '-', got {fmt(name)}")
        if name in {r.name for r in out}:
            raise w.error(f"{path}.name", f"must be unique; {name!r} is given twice")
        ref = Reference(name, w.mapping(entry.get("student"), f"{path}.student"),
                        w.mapping(entry.get("distill"), f"{path}.distill"),
                        w.mapping(entry.get("train"), f"{path}.train"))
        _check_reference(w, path, ref)
        out.append(ref)
    return tuple(out)


def _check_reference(w: Where, path: str, ref: Reference) -> None:
    """Try the reference's sections on their configs; the config's message under the file and key path."""
    from ..errors import ConfigError
    from ..models.student import StudentConfig
    from ..training.config import TrainConfig
    from ..training.losses import DistillConfig

    student = dict(ref.student)
    preset, width = student.pop("preset", None), student.pop("width", None)
    if preset is not None and preset not in STUDENT_PRESETS:
        raise w.error(f"{path}.student.preset", f"must be one of {', '.join(STUDENT_PRESETS)}, got {fmt(preset)}")
    if width is not None and width != "fit" and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise w.error(f"{path}.student.width", f"must be fit or a positive integer (base_channels), got {fmt(width)}")
    if width is not None and "base_channels" in student:
        raise w.error(f"{path}.student.width", "give either width or base_channels, not both")
    try:  # strides of blocks it lacks are dropped, as for proposals (a bad n_blocks is the config's to report)
        names = {f"b{i}" for i in range(1, sum(student.get("n_blocks", StudentConfig().n_blocks)) + 1)}
        strides = dict(student.get("strides", StudentConfig().strides))
        student["strides"] = {k: v for k, v in strides.items() if k in names}
    except (TypeError, ValueError):
        pass
    distill = dict(ref.distill)
    block = distill.pop("embed_block", "last")
    if block not in EMBED_BLOCK_CHOICES:
        raise w.error(f"{path}.distill.embed_block", f"must be one of {', '.join(EMBED_BLOCK_CHOICES)}, got {fmt(block)}")
    for section, values, reserved, cls in (("student", student, _STUDENT_SET, StudentConfig),
                                           ("distill", distill, (), DistillConfig),
                                           ("train", dict(ref.train), _TRAIN_SET, TrainConfig)):
        for key in values:
            if key in reserved:
                raise w.error(f"{path}.{section}.{key}", "is set by the search itself; remove it")
        try:
            cls.from_dict(_listed(values))
        except ConfigError as exc:
            raise w.error(f"{path}.{section}", str(exc)) from None
        except TypeError as exc:
            raise w.error(f"{path}.{section}", f"not valid: {exc}") from None


def _listed(values: Mapping[str, Any]) -> dict[str, Any]:
    """YAML lists as the tuples the configs take (n_blocks, strides)."""
    out = dict(values)
    if isinstance(out.get("n_blocks"), list):
        out["n_blocks"] = tuple(out["n_blocks"])
    return out


# ------------------------------------------------------------------------------------------------ building


def _centre(p: ParamSpec) -> Any:
    """A searched parameter's centre (see the module docstring)."""
    if p.type == "categorical":
        return p.choices[(len(p.choices) - 1) // 2]
    low, high = float(p.low), float(p.high)
    value = math.sqrt(low * high) if p.log else (low + high) / 2
    if p.step:
        value = low + round((value - low) / float(p.step)) * float(p.step)
    value = min(max(value, low), high)
    return int(round(value)) if p.type == "int" else float(value)


def reference_train(spec: SearchSpec, known: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The training values every reference starts from: fixed values, centres of searched ones, epochs at its
    maximum. ``known``: values conditions may depend on (a conditional parameter whose condition fails takes its
    ``default:``, or the config's own default)."""
    out: dict[str, Any] = {}
    values = dict(known or {})
    for p in spec.train:
        if p.when and not p.active({**values, **out}):
            if p.default is not MISSING:
                out[p.name] = p.default
            continue
        out[p.name] = p.value if p.type == "fixed" else _centre(p)
    out["epochs"] = spec.max_epochs
    return out


def fit_width(spec: SearchSpec, student: Mapping[str, Any], n_classes: int, in_channels: int = 1,
              limit: int = 1024) -> int:
    """The largest ``base_channels`` (a multiple of 8, at most ``limit``) whose student fits the budget (analytic
    count: parameter bytes at param_dtype, MACs on the profile's input); 8 when none does (costing then rejects
    it)."""
    from ..complexity import cost_student

    best = 8
    for width in range(8, limit + 1, 8):
        cfg = spec.student_config({**student, "base_channels": width}, None, n_classes, in_channels)
        if not cost_student(cfg, spec.input_shape, spec.budget, counter="analytic").passed:
            break  # wider students only cost more
        best = width
    return best


def reference_proposal(spec: SearchSpec, ref: Reference, n_classes: int = 10, in_channels: int = 1,
                       trial_seed: int | None = None) -> Proposal:
    """The full :class:`Proposal` of reference ``ref`` under ``spec`` (see the module docstring)."""
    from ..models.presets import get_preset
    from ..training.config import TrainConfig
    from ..training.losses import DistillConfig

    student = dict(ref.student)
    preset, width = student.pop("preset", None), student.pop("width", None)
    base: dict[str, Any] = {}
    if preset is not None:
        base = {k: v for k, v in get_preset(preset).config.to_dict().items() if k not in _STUDENT_SET}
    student = _listed({**base, **student})
    if width == "fit":
        width = fit_width(spec, student, n_classes, in_channels)
    if width is not None:
        student["base_channels"] = int(width)
    distill = dict(ref.distill)
    block = distill.pop("embed_block", "last")
    known = {**distill, "use_embedding": float(distill.get("emb_weight", 0.0)) > 0, "embed_block": block}
    train = {**reference_train(spec, known), **dict(ref.train)}
    if trial_seed is not None:
        train["seed"] = int(trial_seed)
    train["device"] = "cuda" if spec.search.gpus_per_trial > 0 else "cpu"
    train["num_threads"] = max(1, int(spec.search.cpus_per_trial))
    proposal = Proposal(student=spec.student_config(student, block, n_classes, in_channels),
                        distill=DistillConfig.from_dict(distill), train=TrainConfig.from_dict(train))
    return dataclasses.replace(proposal, params=reference_params(spec, proposal))


def _contains(p: ParamSpec, value: Any) -> bool:
    """Whether ``value`` lies in the distribution of the searched parameter ``p``."""
    if p.type == "categorical":
        return any(value == c and type(value) is type(c) for c in p.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not p.low <= value <= p.high:
        return False
    if p.type == "int" and value != int(value):
        return False
    if p.step:
        steps = (value - p.low) / p.step
        return abs(steps - round(steps)) < 1e-9
    return True


def _known_values(proposal: Proposal) -> dict[str, Any]:
    """The values of a proposal under the search file's parameter names."""
    st, di = proposal.student, proposal.distill
    total = sum(st.n_blocks)
    block = {f"b{total}": "last", f"b{max(1, total - 1)}": "penultimate"}.get(st.embed_block)
    values = {**st.to_dict(), **di.to_dict(), **proposal.train.to_dict()}
    values.update(n_stages=len(st.n_blocks), use_embedding=di.uses_embeddings, embed_block=block)
    values.update({f"blocks_s{i}": int(n) for i, n in enumerate(st.n_blocks, start=1)})
    return values


def reference_params(spec: SearchSpec, proposal: Proposal) -> dict[str, Any]:
    """The proposal's values under the space's searched parameter names, for those that lie inside the
    space's distributions and whose conditions hold (values outside are simply not recorded)."""
    known = _known_values(proposal)
    out: dict[str, Any] = {}
    for p in spec.params:
        if not p.searched or (p.when and not p.active(known)):
            continue
        names = ([f"blocks_s{i}" for i in range(1, known["n_stages"] + 1)] if p.name == "blocks_per_stage"
                 else [p.name])
        for name in names:
            if _contains(p, known.get(name)):
                out[name] = known[name]
    return out


# ------------------------------------------------------------------------------------------------ planning


@dataclass
class ReferencePlan:
    """One reference before a search: its proposal, its cost, and whether it will be trained."""

    name: str
    proposal: Proposal
    cost: Any  # spec.Cost
    status: str  # "planned" | "over_budget" | "needs_teacher"
    message: str | None = None  # why it is not trained (a warning for the user)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message,
                "base_channels": self.proposal.student.base_channels, "params": self.cost.params,
                "param_bytes": self.cost.param_bytes, "macs": self.cost.macs,
                "distill": self.proposal.distill.to_dict(), "epochs": self.proposal.train.epochs}


def plan_references(spec: SearchSpec, n_classes: int, has_teacher: bool, in_channels: int = 1) -> list[ReferencePlan]:
    """Every reference of ``spec`` built and costed; ``planned`` ones will be trained, the others are reported."""
    plans = []
    b = spec.budget
    for ref in spec.references:
        proposal = reference_proposal(spec, ref, n_classes, in_channels)
        cost = spec.cost(proposal.student)
        status, message = "planned", None
        if ref.needs_teacher and not has_teacher:
            status = "needs_teacher"
            message = (f"reference {ref.name!r} distils from the teacher but this search has no teacher cache: "
                       "skipped")
        elif not cost.passed:
            status = "over_budget"
            message = (f"reference {ref.name!r} does not fit the budget ({cost.param_bytes:,} bytes at "
                       f"{b.param_dtype}, {cost.macs:,} MACs; limits {b.max_param_bytes:,} bytes, {b.max_macs:,} "
                       "MACs): reported, not trained")
        plans.append(ReferencePlan(ref.name, proposal, cost, status, message))
    return plans


def enqueue_references(study: Any, plans: list[ReferencePlan]) -> int:
    """Enqueue the references to the run's new Optuna study, before any sampled proposal (the sampler learns from
    them): every planned one and every over-budget one (told as rejected when asked); a reference that needs a
    teacher the search lacks is left out. Idempotent: a study that already holds references is left as it is.
    Returns how many were enqueued."""
    if any(t.user_attrs.get("kind") == REFERENCE for t in study.get_trials(deepcopy=False)):
        return 0
    n = 0
    for plan in plans:
        if plan.status == "needs_teacher":
            continue
        study.enqueue_trial(plan.proposal.params, user_attrs={"kind": REFERENCE, "reference": plan.name})
        n += 1
    return n
