"""Typed config: defaults ← YAML ← flags ← --set, coercion by field type, and errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import pytest
import yaml

from mcts_cot.config import SamplingConfig, config_hash, describe, load_config, option, save_config, section
from mcts_cot.errors import UserError
from mcts_cot.evaluate import EvalConfig


@dataclasses.dataclass
class Inner:
    ratio: float = option(0.5, "a float")
    flag: bool = option(False, "a bool")
    names: list[str] = option(["a"], "a list of strings")
    limit: Optional[int] = option(None, "an optional int")  # noqa: UP045


@dataclasses.dataclass
class Outer:
    inner: Inner = section(Inner, "a section")
    sampling: SamplingConfig = section(SamplingConfig, "sampling")
    name: str = option("x", "a string")


def _yaml(tmp_path, data) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_precedence_defaults_yaml_flags_set(tmp_path):
    path = _yaml(tmp_path, {"sampling": {"n": 2, "temperature": 0.3, "top_p": 0.9}, "name": "yaml"})
    cfg = load_config(Outer, path, ["sampling.temperature=0.9", "name=set"], **{"sampling.n": 4, "name": "flag", "sampling.top_p": None})
    assert cfg.sampling.n == 4  # flag beats YAML
    assert cfg.sampling.temperature == 0.9 and cfg.name == "set"  # --set beats flag and YAML
    assert cfg.sampling.top_p == 0.9  # a None flag is ignored
    assert cfg.sampling.max_tokens == SamplingConfig().max_tokens  # untouched default


def test_coercion_by_field_type(tmp_path):
    cfg = load_config(Outer, None, ["inner.ratio=1", "inner.flag=true", "inner.names=[b, c]", "inner.limit=3", "name=12"])
    assert cfg.inner.ratio == 1.0 and isinstance(cfg.inner.ratio, float)
    assert cfg.inner.flag is True and cfg.inner.names == ["b", "c"] and cfg.inner.limit == 3
    assert cfg.name == "12"
    assert load_config(Outer, None, ["inner.limit=null"]).inner.limit is None
    assert load_config(Outer, _yaml(tmp_path, {"inner": {"ratio": 2}})).inner.ratio == 2.0


def test_defaults_are_not_shared_between_instances():
    a, b = Outer(), Outer()
    a.inner.names.append("z")
    assert b.inner.names == ["a"]


def test_unknown_key_names_it_and_suggests_the_closest(tmp_path):
    with pytest.raises(UserError, match=r"unknown key 'sampling.temprature'.*did you mean 'sampling.temperature'"):
        load_config(EvalConfig, None, ["sampling.temprature=0.5"])
    with pytest.raises(UserError, match=r"c.yaml: unknown key 'sampling.temprature'.*'sampling.temperature'"):
        load_config(EvalConfig, _yaml(tmp_path, {"sampling": {"temprature": 0.5}}))


def test_unknown_section_is_named():
    with pytest.raises(UserError, match=r"unknown key 'samplng'.*did you mean 'sampling'"):
        load_config(EvalConfig, None, ["samplng.n=2"])
    with pytest.raises(UserError, match="unknown key 'zzz'.*valid keys"):
        load_config(EvalConfig, None, ["zzz.n=2"])


@pytest.mark.parametrize("item, key", [("sampling.n=two", "sampling.n"), ("inner.flag=3", "inner.flag"),
                                      ("inner.names=5", "inner.names"), ("inner.limit=1.5", "inner.limit")])
def test_bad_value_type_names_key_and_type(item, key):
    with pytest.raises(UserError, match=f"key '{key}' expects"):
        load_config(Outer, None, [item])


def test_section_needs_a_mapping_and_set_needs_equals(tmp_path):
    with pytest.raises(UserError, match="'sampling' is a section"):
        load_config(Outer, _yaml(tmp_path, {"sampling": 3}))
    with pytest.raises(UserError, match="expected key=value"):
        load_config(Outer, None, ["sampling.n"])


def test_literal_choice_suggests(tmp_path):
    with pytest.raises(UserError, match="must be one of vllm, hf, scripted.*did you mean 'vllm'"):
        load_config(EvalConfig, None, ["backend.name=vlm"])


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        load_config(Outer, bad)
    with pytest.raises(UserError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_save_config_round_trip(tmp_path):
    cfg = load_config(EvalConfig, None, ["sampling.n=3", "backend.engine_kwargs={enforce_eager: true}", "problems.limit=5"])
    path = save_config(cfg, tmp_path)
    assert load_config(EvalConfig, path) == cfg


def test_config_hash_is_stable_and_sensitive():
    a, b = EvalConfig(), EvalConfig()
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 16
    b.sampling.n = 2
    assert config_hash(a) != config_hash(b)
    b.sampling.n, b.out = 1, "elsewhere"
    assert config_hash(a, exclude=("out",)) == config_hash(b, exclude=("out",)) != config_hash(b)


def test_describe_lists_every_leaf_with_help():
    rows = describe(EvalConfig)
    keys = {key for key, _, _ in rows}
    assert {"sampling.temperature", "model.name", "k", "out"} <= keys
    assert all(help_ for _, _, help_ in rows)


def test_exponent_without_a_dot_is_a_float():
    from mcts_cot.config import load_config
    from mcts_cot.evaluate import EvalConfig

    cfg = load_config(EvalConfig, None, ["sampling.temperature=1e-1"])
    assert cfg.sampling.temperature == 0.1


# ------------------------------------------------------------------------------------- value ranges


def _command_configs() -> list[type]:
    from mcts_cot.export import ExportConfig
    from mcts_cot.loop import BestOfNConfig, CompareConfig, LadderConfig, LoopConfig
    from mcts_cot.search import SearchConfig
    from trainers.config import TrainConfig

    return [SearchConfig, ExportConfig, TrainConfig, EvalConfig, LoopConfig, LadderConfig, BestOfNConfig, CompareConfig]


def _numeric_fields(cls: type, prefix: str = ""):
    """(dotted key, field, value type) of every int or float leaf, optional ones included."""
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _numeric_fields(hint, prefix + f.name + ".")
            continue
        args = set(typing.get_args(hint)) or {hint}
        if args & {int, float}:
            yield prefix + f.name, f, args


@pytest.mark.parametrize("cls_name, item, key, bound", [
    ("search", "concurrent_trees=0", "concurrent_trees", ">= 1"),  # was a busy loop at 72% CPU, forever
    ("search", "budget.max_rollouts=-1", "budget.max_rollouts", ">= 1"),
    ("search", "problems.limit=-1", "problems.limit", ">= 1"),
    ("search", "temperature=-1", "temperature", ">= 0"),
    ("search", "policy.children=0", "policy.children", ">= 1"),
    ("eval", "sampling.top_p=1.5", "sampling.top_p", "<= 1"),
    ("eval", "verify.timeout_s=0", "verify.timeout_s", "> 0"),
    ("eval", "sampling.temperature=.nan", "sampling.temperature", "a finite number"),
    ("train", "learning_rate=-1e-5", "learning_rate", ">= 0"),
    ("train", "epsilon=0.7", "epsilon", "< 0.5"),
    ("export", "val_fraction=1", "val_fraction", "< 1"),
])
def test_out_of_range_value_names_the_key_and_the_bound(cls_name, item, key, bound):
    cls = {c.__name__.removesuffix("Config").lower(): c for c in _command_configs()}[cls_name]
    with pytest.raises(UserError, match=rf"--set: key '{key}' must be {bound}, got "):
        load_config(cls, None, [item])


def test_out_of_range_in_yaml_names_the_file_and_key(tmp_path):
    from mcts_cot.search import SearchConfig

    with pytest.raises(UserError, match=r"c.yaml: key 'budget.max_rollouts' must be >= 1, got -1"):
        load_config(SearchConfig, _yaml(tmp_path, {"budget": {"max_rollouts": -1}}))


def test_every_numeric_key_has_a_range_its_default_meets():
    unbounded = {"reward.correct", "reward.wrong", "reward.no_answer",  # any finite reward or weight is meaningful
                 "grpo.accuracy_weight", "grpo.format_weight", "grpo.reflection_weight"}
    for cls in _command_configs():
        default = cls()
        for key, f, _ in _numeric_fields(cls):
            assert key in unbounded or f.metadata.get("range"), f"{cls.__name__}.{key} has no range"
            value = default
            for part in key.split("."):
                value = getattr(value, part)
            load_config(cls, None, [f"{key}={value if value is not None else 'null'}"])  # the default is valid


@pytest.mark.parametrize("path", sorted(p for d in ("search", "export", "train", "eval")
                                         for p in (Path(__file__).resolve().parents[1] / "configs" / d).rglob("*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_is_in_range(path):
    from mcts_cot.export import ExportConfig
    from mcts_cot.search import SearchConfig
    from trainers.config import TrainConfig

    cls = {"search": SearchConfig, "export": ExportConfig, "eval": EvalConfig}.get(path.parent.name, TrainConfig)
    load_config(cls, path)


def test_describe_shows_each_range():
    from mcts_cot.search import SearchConfig

    helps = {key: text for key, _, text in describe(SearchConfig)}
    assert helps["concurrent_trees"].endswith("[>= 1]") and helps["top_p"].endswith("[> 0, <= 1]")
    assert not helps["model.name"].endswith("]")
