"""Search files (asc_search.search.space): the shipped spaces load; broken files fail with a message naming the
file, the key and what is allowed; the configs' own checks are the bounds of their fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from asc_search.errors import ConfigError
from asc_search.search.space import load_space, parse_space, with_subset

ROOT = Path(__file__).resolve().parents[1]
QUICK = (ROOT / "search_spaces" / "quick.yaml").read_text()


def test_shipped_spaces_load():
    quick = load_space(ROOT / "search_spaces" / "quick.yaml")
    dcase = load_space(ROOT / "search_spaces" / "dcase.yaml")
    assert quick.profile.name == "quick" and quick.input_shape == (1, 1, 40, 51)
    assert dcase.profile.name == "dcase" and dcase.input_shape == (1, 1, 256, 65)
    assert (dcase.budget.max_param_bytes, dcase.budget.param_dtype, dcase.budget.max_macs) == (128_000, "int8", 30_000_000)
    assert dcase.max_epochs == 120 and quick.max_epochs == 10
    assert len(quick.sha256) == 64 and quick.search.num_samples >= 8


@pytest.mark.parametrize(
    "old, new, where, allowed",
    [
        # 1. unknown top-level section
        ("search:\n", "serch: {}\nsearch:\n", "bad.yaml: serch: unknown key", "allowed keys here: description, profile"),
        # 2. low above high
        ("base_channels: {type: int, low: 8, high: 40, step: 8}", "base_channels: {type: int, low: 48, high: 40}",
         "bad.yaml: student.base_channels.low", "must be <= high"),
        # 3. float bound on an integer parameter
        ("base_channels: {type: int, low: 8, high: 40, step: 8}", "base_channels: {type: int, low: 8.5, high: 40}",
         "student.base_channels.low", "must be an integer, got 8.5"),
        # 4. unknown sampler
        ("sampler: tpe", "sampler: cmaes", "search.sampler", "one of 'tpe', 'random', 'nsga2'"),
        # 5. unknown distribution type
        ("kd_weight: {type: float, low: 0.0, high: 1.0}", "kd_weight: {type: uniform, low: 0.0, high: 1.0}",
         "distill.kd_weight.type", "must be one of int, float, categorical, fixed"),
        # 6. bad categorical choice
        ("emb_loss: {type: categorical, choices: [mse, cosine]", "emb_loss: {type: categorical, choices: [mse, l1]",
         "distill.emb_loss.choices[1]", "must be one of mse, cosine, got 'l1'"),
        # 7. log scale from zero
        ("lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}", "lr: {type: float, low: 0.0, high: 1.0e-2, log: true}",
         "train.lr.low", "must be a number > 0"),
        # 8. unknown feature profile
        ("profile: quick", "profile: huge", "bad.yaml: profile", "one of 'dcase', 'dcase2023', 'quick'"),
        # 9. bad budget dtype
        ("param_dtype: int8", "param_dtype: int4", "budget.param_dtype", "must be one of int8, float16, float32"),
        # 10. objectives
        ("objectives: [val_macro_accuracy]", "objectives: [macs]", "search.objectives", "must start with val_macro_accuracy"),
        # 11. condition on a parameter not declared before
        ("when: {use_embedding: true}, default: 0.0}", "when: {use_embeding: true}, default: 0.0}",
         "distill.emb_weight.when.use_embeding", "must name a parameter declared before"),
        # 12. fractional GPUs above one
        ("gpus_per_trial: 0", "gpus_per_trial: 1.5", "search.resources.gpus_per_trial", "a fraction <= 1"),
        # 13. n_stages without blocks_per_stage
        ("  blocks_per_stage: {type: int, low: 1, high: 2}\n", "", "student.blocks_per_stage", "go together"),
        # 14. the search sets the seed itself
        ("  epochs: 10\n", "  epochs: 10\n  seed: 3\n", "train.seed", "is set by the search itself"),
        # 15. a list where a distribution is expected
        ("batch_size: {type: categorical, choices: [32, 64]}", "batch_size: [32, 64]", "train.batch_size",
         "{type: categorical, choices: [...]}"),
        # 17. a mask wider than the profile's spectrogram
        ("  warmup_epochs: 0.5\n", "  warmup_epochs: 0.5\n  freq_mask: 40\n", "train.freq_mask",
         "must be smaller than the 40 mel bins of profile 'quick'"),
        # 18-24. bounds the configs themselves check (DistillConfig, StudentConfig, TrainConfig, Budget, SplitConfig)
        ("kd_weight: {type: float, low: 0.0, high: 1.0}", "kd_weight: {type: float, low: 0.0, high: 1.5}",
         "distill.kd_weight.high", "must lie in [0, 1], got 1.5"),
        ("expansion_rate: {type: float, low: 1.5, high: 3.5}", "expansion_rate: {type: float, low: 0.5, high: 3.5}",
         "student.expansion_rate.low", "must be >= 1, got 0.5"),
        ("  warmup_epochs: 0.5\n", "  warmup_epochs: 0.5\n  mixup_p: 2\n", "train.mixup_p", "must lie in [0, 1], got 2.0"),
        ("strides: {b2: [2, 2], b3: [1, 2]}", "strides: {b2: [0, 2]}", "student.strides",
         "must be a positive integer or a (freq, time) pair of positive integers, got [0, 2]"),
        ("max_macs: 2000000", "max_macs: 0", "budget.max_macs", "must be a positive integer, got 0"),
        ("val_fraction: 0.2", "val_fraction: 1.5", "split.val_fraction", "must be strictly between 0 and 1, got 1.5"),
        ("  warmup_epochs: 0.5\n", "  warmup_epochs: 0.5\n  optimizer: sgd\n", "train.optimizer",
         "must be one of adamw, adam, got 'sgd'"),
        # 16. unknown key inside a parameter
        ("expansion_rate: {type: float, low: 1.5, high: 3.5}", "expansion_rate: {type: float, low: 1.5, high: 3.5, steps: 2}",
         "student.expansion_rate.steps", "allowed keys here: type, when, default, low, high, step, log"),
    ],
)
def test_broken_files_name_file_key_and_allowed(old, new, where, allowed):
    assert old in QUICK, old
    with pytest.raises(ConfigError) as info:
        parse_space(QUICK.replace(old, new, 1), source="bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml: ")
    assert where in message and allowed in message, message


def _of_kind(kind, value):
    if isinstance(value, bool):
        return kind == "bool"
    return {"int": isinstance(value, int), "float": isinstance(value, (int, float)), "str": isinstance(value, str),
            "bool": False}[kind]


@pytest.mark.parametrize("section", ["student", "distill", "train"])
def test_config_fields_accept_exactly_what_the_configs_accept(section):
    """The search file's rule for a config field is the config's own check: it accepts a value exactly when the
    config does and the value has the field's type (no bound of its own that could drift from the config's)."""
    from asc_search.search.rules import Where
    from asc_search.search.space import section_keys

    probes = [-1, 0, 0.5, 1, 2, 3.5, 1e6, True, "mse", "adam", None]
    checked = 0
    for name, rule in section_keys(section).items():
        if rule.config is None or rule.kind == "structured":
            continue
        for value in probes:
            try:
                rule.config(**{name: value, **rule.context})
                config_ok = True
            except Exception:
                config_ok = False
            try:
                rule.check(Where("f.yaml"), value, f"{section}.{name}")
                space_ok = True
            except ConfigError as exc:
                space_ok = False
                assert str(exc).startswith(f"f.yaml: {section}.{name}: "), exc
            assert space_ok == (config_ok and _of_kind(rule.kind, value)), (name, value)
            checked += 1
    assert checked >= 30


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML: line 3, column 1"):
        parse_space("profile: quick\nbudget: {max_macs: [1,\n", source="bad.yaml")
    with pytest.raises(ConfigError, match="the search file is empty"):
        parse_space("", source="empty.yaml")
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"bad.yaml: train: is required"):
        parse_space(QUICK.split("train:")[0] + "search: {}\n", source="bad.yaml")


def test_builtin_spaces_resolve_by_name_and_unknown_names_list_them():
    from asc_search.search.space import builtin_spaces, load_space, resolve_space

    assert {"quick", "dcase"} <= set(builtin_spaces())
    assert resolve_space("quick") == resolve_space("quick.yaml")
    assert load_space("quick").profile.name == "quick"
    assert load_space("dcase").budget.max_param_bytes == 128_000
    with pytest.raises(ConfigError, match=r"nope.*built-in space: dcase, quick"):
        resolve_space("nope")


def test_the_device_response_probability_is_a_search_parameter():
    import optuna

    shipped = (ROOT / "search_spaces" / "quick.yaml").read_text()
    assert parse_space(shipped).sample(optuna.create_study().ask()).train.dir_p == 0.6  # on in the demo (measured)
    text = shipped.replace("  dir_p: 0.6 ", "  dir_p: {type: float, low: 0.0, high: 0.8} ")
    spec = parse_space(text, source="dir.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = {spec.sample(study.ask()).train.dir_p for _ in range(5)}
    assert len(values) == 5 and all(0.0 <= v <= 0.8 for v in values)
    with pytest.raises(ConfigError, match=r"dir.yaml: train.dir_p.*1.5"):
        parse_space(text.replace("high: 0.8}", "high: 1.5}"), source="dir.yaml")


def test_the_training_subset_is_a_split_setting_and_one_option_away():
    text = (ROOT / "search_spaces" / "quick.yaml").read_text()
    assert parse_space(text).split.subset is None
    spec = parse_space(text.replace("  seed: 0\n", "  seed: 0\n  subset: 25\n", 1), source="s.yaml")
    assert spec.split.subset == 25 and spec.to_dict()["split"]["subset"] == 25
    with pytest.raises(ConfigError, match=r"s.yaml: split.subset: must be one of 5, 10, 25, 50, 100.*got 30"):
        parse_space(text.replace("  seed: 0\n", "  seed: 0\n  subset: 30\n", 1), source="s.yaml")
    changed = with_subset(load_space(ROOT / "search_spaces" / "quick.yaml"), 25)
    assert changed.split.subset == 25 and "split.subset set to 25" in changed.text  # search.yaml records it
    with pytest.raises(ConfigError, match="subset must be one of"):
        with_subset(changed, 20)
