"""Typed configuration: dataclasses with a help text per field, loaded from YAML plus `--set` overrides.

Every command has one top-level dataclass (e.g. `EvalConfig`) made of shared sections (`ModelConfig`,
`BackendConfig`, ...). `load_config` merges, in order: the dataclass defaults, a YAML file, then dotted
`key=value` overrides, each value typed by the field it sets. Unknown keys and badly typed values raise a
`UserError` that names the key and suggests the closest valid one. The resolved config is written beside
every output (`save_config`) and hashed (`config_hash`) so a run dir knows what produced it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import operator
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml

from mcts_cot.errors import UserError

T = TypeVar("T")


def option(default: Any, help: str, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field with a help text (shown by `mcts-cot config`) and, for a number, its range.

    The bounds (>= ge, > gt, <= le, < lt) are checked wherever a value is set (`_check_range`), so a
    nonsensical number stops at the command line, naming the key, instead of deep inside a run (a
    `concurrent_trees` of 0 used to busy-loop forever).
    """
    bounds = {name: bound for name, bound in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if bound is not None}
    metadata = {"help": help, "range": bounds} if bounds else {"help": help}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda d=default: _copy(d), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type, help: str) -> Any:
    """A nested config section field."""
    return dataclasses.field(default_factory=cls, metadata={"help": help})


def _copy(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


# --------------------------------------------------------------------------------------------- loading


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                **flags: Any) -> T:
    """Build a `cls` from defaults, an optional YAML file and `key=value` overrides.

    `flags` are dotted keys set by dedicated CLI options (e.g. `model.name` from `--model`); a flag
    whose value is None is ignored. Flags apply after the YAML file and before `--set` overrides.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(Path(path))
    cfg = _build(cls, data, where=str(path) if path else "config", prefix="")
    for key, value in flags.items():
        if value is not None:
            set_value(cfg, key, value, where="command line")
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set search.c_uct=2.0")
        key, raw = item.split("=", 1)
        set_value(cfg, key.strip(), _parse_scalar(raw), where="--set")
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys to values")
    return data


def _parse_scalar(raw: str) -> Any:
    """`--set` values are YAML scalars/lists, so `3`, `0.5`, `true`, `[a, b]` and `null` all work."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _build(cls: type[T], data: dict[str, Any], where: str, prefix: str) -> T:
    data = _unalias(cls, data, where, prefix)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise UserError(_unknown_key(where, prefix + key, names, prefix))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            if not isinstance(value, dict):
                raise UserError(f"{where}: key '{prefix + f.name}' is a section; give it a mapping")
            kwargs[f.name] = _build(hints[f.name], value, where, prefix + f.name + ".")
        else:
            kwargs[f.name] = _check_range(f, _coerce(value, hints[f.name], where, prefix + f.name), where, prefix + f.name)
    return cls(**kwargs)


def _unalias(cls: type, data: dict[str, Any], where: str, prefix: str) -> dict[str, Any]:
    """Rename the keys a config class accepts under other names (its `ALIASES`, e.g. TrainingArguments'
    `num_train_epochs` for `epochs`; a target may be a dotted key); a key given under both names is an error."""
    data = dict(data)
    for alias, target in getattr(cls, "ALIASES", {}).items():
        if alias not in data:
            continue
        section, _, leaf = target.rpartition(".")
        into = data.setdefault(section, {}) if section else data
        if not isinstance(into, dict):
            raise UserError(f"{where}: key '{prefix + section}' is a section; give it a mapping")
        if leaf in into:
            raise UserError(f"{where}: '{prefix + alias}' and '{prefix + target}' name the same key; give one of them")
        into[leaf] = data.pop(alias)
    return data


def _unknown_key(where: str, key: str, names: list[str], prefix: str) -> str:
    leaf = key[len(prefix):]
    close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix + close[0]}'?" if close else f"; valid keys here: {', '.join(names)}"
    return f"{where}: unknown key '{key}'{hint}"


def set_value(cfg: Any, dotted: str, value: Any, where: str) -> None:
    """Set `a.b.c` on a nested config, typed by the target field."""
    parts = dotted.split(".")
    obj, prefix = cfg, ""
    parts = [*getattr(type(cfg), "ALIASES", {}).get(parts[0], parts[0]).split("."), *parts[1:]]
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            raise UserError(_unknown_key(where, prefix + part, names, prefix))
        hint = typing.get_type_hints(type(obj))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(hint):
                if not isinstance(value, dict):
                    raise UserError(f"{where}: key '{dotted}' is a section; set one of its keys")
                value = _build(hint, value, where, dotted + ".")
            else:
                field = next(f for f in dataclasses.fields(obj) if f.name == part)
                value = _check_range(field, _coerce(value, hint, where, dotted), where, dotted)
            setattr(obj, part, value)
            return
        if not dataclasses.is_dataclass(hint):
            raise UserError(f"{where}: key '{prefix + part}' is not a section, so '{dotted}' does not exist")
        obj, prefix = getattr(obj, part), prefix + part + "."


def _coerce(value: Any, hint: Any, where: str, key: str) -> Any:
    """Check `value` against a field type, converting where it is lossless (int → float, scalar → str)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, key)
            except UserError:
                continue
        raise UserError(f"{where}: key '{key}' expects {_type_name(hint)}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            extra = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{where}: key '{key}' must be one of {', '.join(map(str, choices))}, got {value!r}{extra}")
        return value
    base = origin or hint
    if base is Any:
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    elif base is list:
        if isinstance(value, list):
            (item,) = typing.get_args(hint) or (Any,)
            return [_coerce(v, item, where, f"{key}[{i}]") for i, v in enumerate(value)]
    elif base is dict:
        if isinstance(value, dict):
            return dict(value)
    raise UserError(f"{where}: key '{key}' expects {_type_name(hint)}, got {value!r}")


_BOUNDS = {"ge": (">=", operator.ge), "gt": (">", operator.gt), "le": ("<=", operator.le), "lt": ("<", operator.lt)}


def _check_range(f: dataclasses.Field, value: Any, where: str, key: str) -> Any:
    """`value` if it is a finite number within the field's declared range (or not a number at all)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where}: key '{key}' must be a finite number, got {value!r}")
    for name, bound in f.metadata.get("range", {}).items():
        symbol, holds = _BOUNDS[name]
        if not holds(value, bound):
            raise UserError(f"{where}: key '{key}' must be {symbol} {bound:g}, got {value!r}")
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# --------------------------------------------------------------------------------------------- saving


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, out_dir: str | Path) -> Path:
    """Write the resolved config as `config.yaml` in `out_dir`, atomically."""
    from mcts_cot.io import write_atomic

    path = Path(out_dir) / "config.yaml"
    write_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    return path


def config_hash(cfg: Any, exclude: tuple[str, ...] = ()) -> str:
    """A short stable hash of the resolved config, leaving out the dotted keys in `exclude`."""
    data = to_dict(cfg)
    for key in exclude:
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field, for `mcts-cot config COMMAND`."""
    rows = []
    default = cls()
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            rows += describe(hint, prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, repr(getattr(default, f.name)), f.metadata.get("help", "") + _range_text(f)))
    return rows


def _range_text(f: dataclasses.Field) -> str:
    bounds = f.metadata.get("range", {})
    return " [" + ", ".join(f"{_BOUNDS[name][0]} {bound:g}" for name, bound in bounds.items()) + "]" if bounds else ""


# --------------------------------------------------------------------------------------------- sections
# Shared by several commands. Each command's own config (EvalConfig, SearchConfig, ...) lives beside the
# code that uses it and is made of these sections plus its own fields.


@dataclasses.dataclass
class ModelConfig:
    """Which model generates (or is trained)."""

    name: str = option("smollm2-135m", "Model alias (smollm2-135m), Hugging Face id or local folder.")
    dtype: str = option("auto", "Weights dtype: auto, float32, bfloat16 or float16. auto = bfloat16 on GPU and on CPUs with native bf16 (avx512_bf16 / AMX), float32 on other CPUs.")
    trust_remote_code: bool = option(False, "Pass trust_remote_code to transformers / vLLM.")


@dataclasses.dataclass
class BackendConfig:
    """The generation engine behind the one `Backend` interface."""

    name: typing.Literal["vllm", "hf", "scripted"] = option("vllm", "vllm (fast, prefix caching), hf (transformers generate) or scripted (deterministic fake, for dry runs and tests).")
    seed: int = option(0, "Sampling seed; equal seeds give equal samples on the same backend and machine.", ge=0)
    gpu_memory_utilization: float = option(0.3, "vLLM GPU memory fraction (GPU only: on CPU the KV cache is sized by cpu_kv_cache_gib).", gt=0, le=1)
    cpu_kv_cache_gib: float | None = option(None, "vLLM-CPU KV cache in GiB; null = 4, or half of NUMA node 0's free memory when that is less. vLLM-CPU counts node 0 only, which can be far smaller than `free` shows, so a fraction of RAM is not used. VLLM_CPU_KVCACHE_SPACE, when set, wins.", gt=0)
    tensor_parallel_size: int = option(1, "vLLM tensor parallel size (GPUs per model).", ge=1)
    max_model_len: int = option(4096, "Longest prompt + generation the engine accepts, in tokens.", ge=1)
    enable_prefix_caching: bool = option(True, "vLLM automatic prefix caching (the search shares long prefixes).")
    block_size: int | None = option(None, "vLLM KV-cache block size in tokens; null = 32 on CPU, vLLM's own default on GPU. Only whole blocks are reused from the prefix cache, so vLLM-CPU's default of 128 recomputes up to 127 tokens of every prompt (for each of a request's n samples).", ge=1)
    engine_kwargs: dict = option({}, "Extra keyword arguments for vllm.LLM, e.g. {enforce_eager: true}.")
    batch_size: int = option(16, "hf backend: prompts per generate call.", ge=1)


@dataclasses.dataclass
class RayConfig:
    """Where a search or an eval runs: one process (the default), or engine actors on a Ray cluster, one per GPU
    (or per tensor-parallel group), fed from one queue by this process, which alone writes the output dir.
    Placement only: a run's results do not depend on these keys (a search resumes under other values)."""

    address: str | None = option(None, "null: one process, no Ray; local: start a Ray cluster on this machine; auto: join the cluster `ray start` made; else a cluster address (host:6379 or ray://host:10001). --ray [ADDRESS] sets it.")
    actors: int | None = option(None, "Engine actors; null = the cluster's GPUs / gpus_per_actor (one on a cluster without GPUs).", ge=1)
    gpus_per_actor: float | None = option(None, "GPUs each engine actor holds; null = backend.tensor_parallel_size on a cluster with GPUs (0 with the scripted backend or without GPUs).", ge=0)
    cpus_per_actor: float = option(1.0, "CPUs each engine actor holds (Ray's scheduling unit; the verifier pool runs inside the actor).", ge=0)
    critic_actors: int = option(1, "search with critic_model: actors serving the critic, shared by the engine actors.", ge=1)
    max_replacements: int | None = option(None, "Fresh actors started in place of ones that died; null = as many as there are actors. The dead actor's unfinished work goes back to the queue.", ge=0)


@dataclasses.dataclass
class SamplingConfig:
    """How each answer is sampled."""

    n: int = option(1, "Samples per problem.", ge=1)
    temperature: float = option(0.0, "0 = greedy.", ge=0)
    top_p: float = option(1.0, "Nucleus sampling mass.", gt=0, le=1)
    max_tokens: int = option(512, "Most generated tokens per sample.", ge=1)


@dataclasses.dataclass
class PromptConfig:
    """How a problem becomes a chat prompt. The default is the embedded model's two-shot preset, which took it
    from 3% (zero-shot) to 23% greedy accuracy on built-in arithmetic (docs/DESIGN.md); instruction models
    on a GPU take configs/presets/qwen-math/ (Qwen's system line, no examples, limits for MATH)."""

    system: str = option(
        "You are a careful math tutor. Solve the problem step by step, one short step per paragraph, "
        "then finish with 'The answer is \\boxed{N}.' where N is the final number.",
        "System message.")
    template: str = option("{problem}", "User message; {problem} is replaced by the problem text.")
    few_shot: list = option([
        {"problem": "Tom has 3 apples and buys 5 more. How many apples does he have now?",
         "solution": "Step 1: Tom starts with 3 apples and buys 5 more, so 3 + 5 = 8.\n\nThe answer is \\boxed{8}."},
        {"problem": "A box holds 4 rows of 6 pens. 7 pens are taken out. How many pens are left?",
         "solution": "Step 1: The box holds 4 * 6 = 24 pens.\n\nStep 2: After taking 7 out, 24 - 7 = 17 pens are left.\n\nThe answer is \\boxed{17}."},
    ], "Worked examples shown as earlier user/assistant turns: a list of {problem, solution}.")


@dataclasses.dataclass
class ProblemsConfig:
    """Where problems come from."""

    source: str = option("builtin:arithmetic:100", "builtin:arithmetic[:N], a .jsonl/.json/.parquet file, or a saved datasets folder.")
    split: typing.Literal["train", "test"] = option("test", "builtin only: train and test problems never overlap.")
    difficulty: int | str = option(2, "builtin only: arithmetic steps per problem, N for 1 to N or a range 'A-B' ('4-6'; '5-5' for exactly five), within 1 to 6.", ge=1, le=6)
    seed: int = option(0, "builtin only: generator seed.", ge=0)
    id_field: str = option("id", "Field holding the problem id (row number when absent).")
    problem_field: str = option("problem", "Field holding the problem text.")
    answer_field: str = option("answer", "Field holding the gold answer.")
    skip_bad_rows: bool = option(False, "Skip rows without a usable answer (counted and reported) instead of failing.")
    limit: int | None = option(None, "Use only the first N problems.", ge=1)


@dataclasses.dataclass
class VerifyConfig:
    """The math-verify worker pool."""

    workers: int = option(2, "Worker processes.", ge=1)
    timeout_s: float = option(5.0, "Seconds before a verification is killed and called unverifiable.", gt=0)
    memory_mb: int = option(2048, "Address-space limit of each worker, in MiB.", ge=1)


@dataclasses.dataclass
class GenerationConfig:
    """The sections of every command that generates answers and verifies them (eval, search, best-of-n): which
    model, on which engine, with which prompt, on which problems, checked by which verifier pool."""

    model: ModelConfig = section(ModelConfig, "The generating model: alias, HF id, or a folder (e.g. one saved by `train`).")
    backend: BackendConfig = section(BackendConfig, "The generation engine.")
    prompt: PromptConfig = section(PromptConfig, "How a problem becomes a chat prompt.")
    problems: ProblemsConfig = section(ProblemsConfig, "Which problems (built-in ones from the test split by default).")
    verify: VerifyConfig = section(VerifyConfig, "The math-verify worker pool.")

