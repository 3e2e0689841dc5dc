"""`mcts-cot checkpoints`: branch existing trajectories at their checkpoints (Checkpoint DPO) or cut correct
ones short where the model already knows the answer (DTO). Both read trajectories, verify them once, grow one
tree per problem through the search engine and write a run dir that `export-pairs` reads like any other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mcts_cot.config import BackendConfig, ModelConfig, PromptConfig, VerifyConfig, option, section
from mcts_cot.search.config import RewardConfig


@dataclass
class TrajectorySource:
    """Where the trajectories come from (see `trajectories.py`)."""

    source: str = option("", "An eval dir (or its samples.jsonl), a search run dir, or a JSONL of responses (--trajectories).")
    text_field: str = option("solution", "JSONL of responses: the field holding the response text.")
    close_with_gold: bool = option(False, "JSONL of responses: end a response that states no answer with 'The answer is \\boxed{<answer>}.' (GSM8K reference solutions stop at their last computation: the file dropped their '#### N' line). Model samples are never closed.")
    limit: int | None = option(None, "Use only the first N problems.", ge=1)
    per_problem: int | None = option(None, "Use only the first N trajectories of each problem (null: all).", ge=1)


@dataclass
class SplitConfig:
    """Checkpoints: paragraph breaks, preferably those followed by a reflection marker."""

    breaks: list[str] = option(["\n\n", "\n"], "Paragraph breaks, tried in order: the first that cuts a trajectory into two or more paragraphs is used.")
    markers: list[str] = option(["Wait", "Alternatively", "But"], "Reflection markers: a break followed by one is a checkpoint; where none is, every break is. [] = every break.")


@dataclass
class BranchConfig:
    """method branch: continuations from chosen checkpoints of every trajectory."""

    checkpoints: int = option(2, "Checkpoints per trajectory (<= 10 candidates: early-weighted draw; more: per 10% quantile).", ge=1)
    n: int = option(4, "Correct trajectory: continuations sampled from each checkpoint (right-to-wrong pairs).", ge=1)
    max_attempts: int = option(8, "Wrong trajectory: continuations sampled from each checkpoint until one is right, at most this many (wrong-to-right pairs).", ge=1)
    wave: int = option(2, "Wrong trajectory: continuations per checkpoint per request, until right or max_attempts.", ge=1)


@dataclass
class DtoConfig:
    """method dto: for each correct trajectory, the first checkpoint where forced answers are already right."""

    exit_prompt: str = option(" Wait, I suddenly got the final answer to the whole problem. Final Answer: \\boxed{", "Appended at a checkpoint to force an answer (the probe).")
    probes: int = option(4, "Forced answers sampled per checkpoint (m).", ge=1)
    probe_tokens: int = option(24, "Most tokens of one forced answer (it stops at the closing brace).", ge=1)
    threshold: float = option(0.75, "Exit at the first checkpoint where at least this share of the forced answers is right.", gt=0, le=1)
    closing: str = option("Hmm, I think this is enough to derive the final answer.\n\n", "Appended after the exit point; the model then writes the final answer.")
    answer_tokens: int = option(64, "Most tokens of the final answer written after the closing phrase (greedy).", ge=1)
    judge_model: str | None = option(None, "Hook, off by default: a judge model that prunes unhelpful middle paragraphs (not implemented; setting it is an error).")


@dataclass
class CheckpointConfig:
    """`mcts-cot checkpoints`: Checkpoint DPO branching (method branch) or DTO truncation (method dto)."""

    model: ModelConfig = section(ModelConfig, "The generating model (the one whose trajectories are branched, for on-policy pairs).")
    backend: BackendConfig = section(BackendConfig, "The generation engine.")
    prompt: PromptConfig = section(PromptConfig, "How a problem becomes a chat prompt (a run dir's trees keep their own).")
    verify: VerifyConfig = section(VerifyConfig, "The math-verify worker pool.")
    method: Literal["branch", "dto"] = option("branch", "branch: continuations from checkpoints (right-to-wrong, wrong-to-right); dto: early-exit truncation of correct trajectories.")
    trajectories: TrajectorySource = section(TrajectorySource, "Where the trajectories come from.")
    split: SplitConfig = section(SplitConfig, "Paragraphs and checkpoints.")
    branch: BranchConfig = section(BranchConfig, "method branch.")
    dto: DtoConfig = section(DtoConfig, "method dto.")
    reward: RewardConfig = section(RewardConfig, "Rewards backed up from verified ends (as in search).")
    temperature: float = option(0.7, "Sampling temperature of continuations and forced answers.", ge=0)
    top_p: float = option(0.9, "Nucleus mass of continuations and forced answers.", gt=0, le=1)
    max_tokens: int = option(384, "Most tokens of one continuation.", ge=1)
    concurrent_trees: int = option(64, "Problems grown at once; their requests share one backend call per wave.", ge=1)
    seed: int = option(0, "Seed of the checkpoint draw and of every sampling request.", ge=0)
    out: str = option("runs/checkpoints", "Run dir (--out).")
