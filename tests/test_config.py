"""Typed config: defaults ← YAML ← flags ← --set, coercion by field type, and errors that name the key."""

from __future__ import annotations

import dataclasses
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
