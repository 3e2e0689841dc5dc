"""The `search` command's configuration: which strategy grows the trees, and the sections every strategy reads.

Strategies (`strategy`) are peers: MCTS (`mcts.py`), best-of-N (`best_of_n.py`) and fork (`fork.py`) read the
same model, prompt, policy (step boundaries and the terminal rule), reward and budget sections, so a comparison
between them is like for like by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mcts_cot.config import (
    GenerationConfig,
    ProblemsConfig,
    RayConfig,
    option,
    section,
)
from mcts_cot.policies import PolicyConfig


@dataclass
class SelectionConfig:
    """Which leaf a tree expands next."""

    rule: Literal["uct", "puct"] = option("uct", "uct: Q + c·sqrt(2 ln N_parent / N) (the paper's code); puct: Q + c·prior·sqrt(N_parent)/(1+N) with a length-normalised prior (MCTS-DPO).")
    c: float = option(1.414, "Exploration constant (1.414 reproduces the paper's code; MCTS-DPO's PUCT uses 1.0).", ge=0)
    length_penalty: float = option(1.25, "puct: prior = softmax over siblings of logprob / tokens^length_penalty.", ge=0)
    leaves_per_tree: int = option(1, "Leaves a tree expands per wave; more than 1 uses virtual loss to spread them.", ge=1)
    width: Literal["fixed", "adaptive"] = option("fixed", "Children per expansion: fixed (policy.children) or adaptive (policy.children where siblings disagree or the step is uncertain, min_children where they agree).")
    min_children: int = option(2, "adaptive width: children of an expansion where siblings agree and the step is confident.", ge=1)
    uncertain_logprob: float = option(-0.5, "adaptive width: a step whose mean log-probability per token is below this is uncertain.", le=0)
    widen: int = option(0, "Progressive widening: times an expanded node whose children are all exhausted (terminal, or exhausted themselves) is expanded again with new samples, so a short problem's tree keeps spending its budget instead of ending as exhausted. 0: never (the paper's rule).", ge=0)


@dataclass
class BudgetConfig:
    """When a tree stops (the paper's rule, all numbers configurable) and global limits."""

    success_correct: int = option(8, "Success once this many distinct correct leaves exist.", ge=1)
    min_rollouts: int = option(32, "... or once more than this many rollouts ...", ge=0)
    success_correct_after_min: int = option(4, "... have found at least this many correct leaves.", ge=1)
    max_rollouts: int = option(128, "Give up after this many rollouts (a rollout = one terminal backed up).", ge=1)
    max_total_tokens: int | None = option(None, "Stop the whole run after this many generated tokens (live trees are written as stopped).", ge=1)
    max_wall_s: float | None = option(None, "Stop the whole run after this many seconds (live trees are written as stopped).", gt=0)


@dataclass
class AllocatorConfig:
    """A run-level token budget that `allocator.py` moves between problems by need, at fixed token checkpoints.
    Off unless `tokens_per_problem` is set; then every strategy (MCTS, best-of-N) spends through it."""

    tokens_per_problem: int | None = option(None, "Run budget = this × the problems of a group (null: no allocator, each tree spends by its own rule).", ge=1)
    group: int = option(64, "Problems that share one budget (taken in the problems' order; all grown at once).", ge=1)
    step_tokens: int = option(256, "Tokens handed out per checkpoint per open tree, on average: the checkpoints' spacing.", ge=1)
    enough_correct: int = option(4, "A tree with this many correct ends gets no more tokens (the export's per-problem cap).", ge=1)
    hopeless_after: int = option(16, "A tree with this many ends and none correct is hopeless: it gets no more tokens while another tree has need.", ge=1)
    hopeless: Literal["close", "reserve"] = option("close", "close: a hopeless tree is closed at once. reserve: it waits, and gets tokens (by p̂ · room) only at checkpoints where no other tree of its group has need, so a budget that the in-between trees cannot use is still spent (FastMCTS's reserve).")
    wall_s: float | None = option(None, "Start another group only while the last group's wall time still fits in this many seconds from the run's start (the rest is left unsearched, for a later run); null: every group.", gt=0)


@dataclass
class RewardConfig:
    """Rewards backed up from terminal nodes. Unverifiable answers get the wrong-answer reward: a result that
    could not be checked is never rewarded as correct."""

    correct: float = option(1.0, "Reward of a verified-correct answer.")
    wrong: float = option(0.0, "Reward of a wrong (or unverifiable) answer.")
    no_answer: float = option(0.0, "Reward of a path that ended without a final answer.")


@dataclass
class BestOfNSettings:
    """strategy best_of_n: whole responses sampled from the root, each ended by the policy's terminal rule and
    backed up as one rollout. A tree samples `n` responses, or `wave` at a time until it has generated
    `tokens_per_problem` tokens (so equal-token comparisons with MCTS are per problem, independent of the run)."""

    n: int | None = option(None, "Samples per problem, in one request (null: sample to tokens_per_problem).", ge=1)
    tokens_per_problem: int | None = option(None, "Sample until this many generated tokens per problem (when n is null).", ge=1)
    wave: int = option(2, "Samples per request when sampling to a token budget.", ge=1)
    max_n: int = option(256, "Most samples per problem when sampling to a token budget.", ge=1)


@dataclass
class ForkSettings:
    """strategy fork (`fork.py`): best-of-N's whole responses cut into steps at `policy.stop`; each step boundary
    on a correct response's path is forked once, deepest first. Samples and budget as best_of_n.* (no fixed n)."""

    n: int = option(4, "Continuations sampled from each step boundary of a correct response.", ge=1)
    min_suffix_tokens: int = option(24, "A boundary is forked only where the correct path's suffix after it held at least this many tokens (a lone answer line resampled gives copies).", ge=1)


@dataclass
class SearchConfig(GenerationConfig):
    """`mcts-cot search`: grow one verified tree per problem (MCTS or fork, or best-of-N as their baseline)."""

    strategy: Literal["mcts", "best_of_n", "fork"] = option("mcts", "How a tree grows: mcts (selection, expansion, backup), best_of_n (whole samples from the root; see best_of_n.*) or fork (best-of-N, then continuations forked from the step boundaries of correct responses; see fork.*).")

    problems: ProblemsConfig = section(lambda: ProblemsConfig(split="train"), "Problems to search.")
    critic_model: str | None = option(None, "typed: a second model for actions marked `model: critic` (the paper uses another model for double-check / reflection).")
    policy: PolicyConfig = section(PolicyConfig, "Step policy.")
    selection: SelectionConfig = section(SelectionConfig, "Leaf selection.")
    budget: BudgetConfig = section(BudgetConfig, "Per-tree and global budgets.")
    reward: RewardConfig = section(RewardConfig, "Rewards.")
    best_of_n: BestOfNSettings = section(BestOfNSettings, "strategy best_of_n (and fork): how many samples per problem.")
    fork: ForkSettings = section(ForkSettings, "strategy fork: continuations per forked step boundary.")
    allocator: AllocatorConfig = section(AllocatorConfig, "Run-level token budget moved between problems by need (off by default).")
    temperature: float = option(0.7, "Sampling temperature of expansions (the paper: 0.7).", ge=0)
    top_p: float = option(0.9, "Nucleus mass of expansions (the paper: 0.9).", gt=0, le=1)
    rollout: Literal["none", "sample", "greedy"] = option("none", "From each new non-terminal node, also generate straight to an answer (kept as a real node), or not.")
    rollout_max_tokens: int = option(512, "Most tokens of one rollout.", ge=1)
    concurrent_trees: int = option(64, "Trees grown at once; their requests share the backend's batch.", ge=1)
    schedule: Literal["continuous", "waves"] = option("continuous", "continuous: a tree submits its next leaf as soon as one of its requests returns (the backend batches requests as they come); waves: every live tree sends its requests in one lock-step backend call and waits for the slowest.")
    in_flight_per_tree: int | None = option(None, "continuous: most selected leaves a tree has in flight, k (null: selection.leaves_per_tree; rollouts ride along). With 1, the plain policy and no rollouts it grows the same trees as waves.", ge=1)
    seed: int = option(0, "Seed of selection tie-breaks and of every sampling request.", ge=0)
    ray: RayConfig = section(RayConfig, "Engine actors on a Ray cluster (--ray); off by default.")
    out: str = option("runs/search", "Run dir (--out).")


# Keys that may change between a run and its resumption without changing what a tree becomes.
RESUMABLE_KEYS = ("problems.limit", "budget.max_total_tokens", "budget.max_wall_s", "allocator.wall_s", "concurrent_trees",
                  "backend.gpu_memory_utilization", "backend.cpu_kv_cache_gib", "backend.batch_size", "verify.workers", "ray", "out")
