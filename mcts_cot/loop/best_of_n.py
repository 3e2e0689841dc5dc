"""`mcts-cot best-of-n`: N whole samples per problem, the baseline MCTS must beat.

Best-of-N is not a second sampler: it is `run_search` with strategy best_of_n (mcts_cot/search/best_of_n.py),
so it shares the shell, the terminal rule, the backup and the run-dir format with MCTS.
"""

from __future__ import annotations

import dataclasses
import math

from rich.console import Console

from mcts_cot.backends import BackendFactory, make_backend
from mcts_cot.config import GenerationConfig, ProblemsConfig, option, section
from mcts_cot.errors import UserError
from mcts_cot.run import run_search, summarize
from mcts_cot.search import SearchConfig
from mcts_cot.search.config import BestOfNSettings


@dataclasses.dataclass
class BestOfNConfig(GenerationConfig):
    """`mcts-cot best-of-n`: N full samples per problem, run as `search` with strategy best_of_n (a run dir of
    one-level trees that export-pairs reads unchanged). N comes from `n`, or from a token budget: each problem
    draws `wave` samples at a time until it has spent its share of `max_total_tokens`."""

    problems: ProblemsConfig = section(lambda: ProblemsConfig(split="train"), "Problems to sample.")
    n: int | None = option(None, "Samples per problem (null: sample until max_total_tokens).", ge=1)
    max_total_tokens: int | None = option(None, "Token budget of the whole run when n is null (e.g. an MCTS run's generated tokens).", ge=1)
    wave: int = option(2, "Samples per problem per generate call when sampling to a token budget.", ge=1)
    max_n: int = option(256, "Most samples per problem when sampling to a token budget.", ge=1)
    temperature: float = option(0.7, "Sampling temperature (the search's).", ge=0)
    top_p: float = option(0.9, "Nucleus mass (the search's).", gt=0, le=1)
    max_tokens: int = option(384, "Most tokens per sample (the search's policy.max_path_tokens).", ge=1)
    seed: int = option(0, "Seed of every sampling request.", ge=0)
    out: str = option("runs/best-of-n", "Run dir (--out).")


def best_of_n_search(cfg: BestOfNConfig, problem_count: int) -> SearchConfig:
    """The search config that samples what `cfg` asks for (a run total becomes an equal share per problem)."""
    if cfg.n is None and cfg.max_total_tokens is None:
        raise UserError("best-of-n: set n, or max_total_tokens (a token budget)")
    scfg = SearchConfig(strategy="best_of_n", model=cfg.model, backend=cfg.backend, prompt=cfg.prompt,
                        problems=cfg.problems, verify=cfg.verify, temperature=cfg.temperature, top_p=cfg.top_p,
                        seed=cfg.seed, out=cfg.out)
    scfg.policy.max_path_tokens = cfg.max_tokens
    share = math.ceil(cfg.max_total_tokens / max(1, problem_count)) if cfg.n is None else None
    scfg.best_of_n = BestOfNSettings(n=cfg.n, tokens_per_problem=share, wave=cfg.wave, max_n=cfg.max_n)
    return scfg


def sample_best_of_n(cfg: BestOfNConfig, console: Console | None = None, overwrite: bool = False,
                     backends: BackendFactory = make_backend) -> dict:
    """Sample, verify and write one tree per problem through the search shell; returns its manifest."""
    from mcts_cot.problems import load_problems

    count = len(load_problems(cfg.problems)[0]) if cfg.n is None else 0
    manifest = run_search(best_of_n_search(cfg, count), overwrite=overwrite, console=console, backends=backends)
    runs = summarize(cfg.out)
    return {**manifest, "samples_per_problem": runs["rollouts"] / max(1, runs["trees"]),
            "token_budget": cfg.max_total_tokens}
