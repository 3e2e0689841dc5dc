"""GRPO with verified rewards on TRL's `GRPOTrainer`: `mcts-cot train` with `objective: grpo`.

Where the other objectives train on exported pairs, GRPO samples its own: each step it draws
`num_generations` completions per prompt, scores them with the rule rewards of `mcts_cot.rewards` (accuracy
through the verifier pool, format, optional reflection; weighted), and pushes the policy toward the
completions that beat their group's mean. Prompts are any problem set rendered with the same prompt preset
as search and eval, so the trained model is asked exactly what it will be evaluated on.

TRL owns sampling (transformers `generate` by default, vLLM with `use_vllm` on GPU), the loss, the
reference (β > 0; with LoRA the adapter-free base) and the loop; this module maps our config onto
`trl.GRPOConfig`, reuses the training arguments, model loading, LoRA and saving of `trainers.trainer`, and
writes the same model folder (weights, tokenizer, config.yaml, metrics.json) plus `rewards.png`.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from pathlib import Path

from mcts_cot.config import ProblemsConfig, PromptConfig, VerifyConfig, option, section
from mcts_cot.errors import UserError


@dataclasses.dataclass
class GRPOOptions:
    """GRPO's own keys; β (KL), learning rate, batch size, steps, LoRA and the rest are the train config's.

    Defaults are TRL 1.16's `GRPOConfig` defaults unless said otherwise; DeepSeekMath (arXiv 2402.03300,
    §4.2) used 64 samples per question, max length 1024, β = 0.04 and lr 1e-6.
    """

    problems: ProblemsConfig = dataclasses.field(
        default_factory=lambda: ProblemsConfig(source="builtin:arithmetic:200", split="train"),
        metadata={"help": "Prompts: any problem set (builtin train split by default); the gold answers score the accuracy reward."})
    prompt: PromptConfig = section(PromptConfig, "How a problem becomes a chat prompt (the search / eval preset).")
    verify: VerifyConfig = section(VerifyConfig, "The math-verify pool behind the accuracy reward (its timeout bounds every step).")
    num_generations: int = option(8, "Group size G: completions per prompt (TRL default 8; DeepSeekMath 64). per_device_train_batch_size × gradient_accumulation_steps must be a multiple of it.", ge=2)
    max_completion_length: int = option(512, "Most generated tokens per completion (TRL default 512; DeepSeekMath 1024).", ge=1)
    temperature: float = option(1.0, "Sampling temperature (TRL default 1.0).", gt=0)
    top_p: float = option(1.0, "Nucleus sampling mass.", gt=0, le=1)
    accuracy_weight: float = option(1.0, "Weight of the verified-accuracy reward (1 only when the verifier says correct).")
    format_weight: float = option(0.1, "Weight of the format reward (exactly one final \\boxed{}).")
    reflection_weight: float = option(0.0, "Weight of the reflection-marker reward (Wait / Let me check ...); 0 leaves it out. Gameable, so off by default.")
    clip_epsilon: float = option(0.2, "PPO-style ratio clip ε (TRL epsilon).", gt=0)
    num_iterations: int = option(1, "Updates per generation batch (μ; 1 = on-policy, as DeepSeekMath).", ge=1)
    loss_type: typing.Literal["grpo", "dapo", "dr_grpo", "bnpo"] = option("dapo", "Token aggregation of the loss (TRL default dapo: no length bias).")
    scale_rewards: typing.Literal["group", "batch", "none"] = option("group", "Advantage scaling: by the group's std (GRPO), the batch's, or none (Dr. GRPO).")
    use_vllm: bool = option(False, "Generate with vLLM (GPU; colocated with training). false: transformers generate, the CPU path.")
    vllm_gpu_memory_utilization: float = option(0.3, "vLLM memory fraction when use_vllm (colocate mode).", gt=0, le=1)
    log_completions: bool = option(False, "Print a sample of completions and their rewards at every log step.")


def reward_functions(opts: GRPOOptions, verifier) -> tuple[list, list[float]]:
    """The reward functions with a non-zero weight, and their weights."""
    from mcts_cot import rewards

    candidates = [(rewards.accuracy_reward(verifier), opts.accuracy_weight),
                  (rewards.format_reward, opts.format_weight), (rewards.reflection_reward, opts.reflection_weight)]
    chosen = [(f, w) for f, w in candidates if w != 0.0]
    if not chosen:
        raise UserError("grpo: every reward weight is 0 (grpo.accuracy_weight, format_weight, reflection_weight)")
    return [f for f, _ in chosen], [w for _, w in chosen]


def prompt_dataset(opts: GRPOOptions):
    """The problems as a prompt-only chat dataset with the gold `answer` column the accuracy reward reads."""
    from datasets import Dataset

    from mcts_cot.problems import load_problems
    from mcts_cot.prompts import messages

    problems, _ = load_problems(opts.problems)
    if not problems:
        raise UserError(f"grpo.problems.source {opts.problems.source}: no problems")
    return Dataset.from_list([{"prompt": messages(opts.prompt, p.problem), "answer": p.answer, "id": p.id}
                              for p in problems])


def _check_batch(cfg) -> None:
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if per_step % cfg.grpo.num_generations:
        raise UserError(f"grpo.num_generations ({cfg.grpo.num_generations}) must divide per_device_train_batch_size "
                        f"× gradient_accumulation_steps ({per_step}): each step holds whole groups")


def grpo_arguments(cfg, out_dir: Path, weights: list[float]):
    """`trl.GRPOConfig`: the shared training arguments plus GRPO's keys (trainer_kwargs still win)."""
    from trl import GRPOConfig

    from trainers.trainer import training_arguments

    opts = cfg.grpo
    return training_arguments(
        cfg, out_dir, has_eval=False, cls=GRPOConfig, beta=cfg.beta, num_generations=opts.num_generations,
        max_completion_length=opts.max_completion_length, temperature=opts.temperature, top_p=opts.top_p,
        reward_weights=weights, epsilon=opts.clip_epsilon, num_iterations=opts.num_iterations,
        loss_type=opts.loss_type, scale_rewards=opts.scale_rewards, use_vllm=opts.use_vllm, vllm_mode="colocate",
        vllm_gpu_memory_utilization=opts.vllm_gpu_memory_utilization, log_completions=opts.log_completions,
        generation_kwargs={"use_cache": True})  # the trainer loads models with use_cache off (training)


def run(cfg, out_dir: str | Path):
    """Train with GRPO as `cfg` says and write a model folder that `eval` and `search` load."""
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from mcts_cot.verify import Verifier
    from trainers.trainer import (
        apply_lora,
        finish_run,
        load_model,
        resolve_model_path,
        resume_from,
        save_model_folder,
    )

    _check_batch(cfg)
    out_dir = Path(out_dir)
    name = cfg.model.name or "smollm2-135m"
    model_path = resolve_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = prompt_dataset(cfg.grpo)
    model = load_model(cfg, model_path)
    if cfg.lora.enabled:
        model = apply_lora(cfg, model)
    with Verifier.from_config(cfg.grpo.verify) as verifier:
        funcs, weights = reward_functions(cfg.grpo, verifier)
        args = grpo_arguments(cfg, out_dir, weights)
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                              processing_class=tokenizer)
        start = time.perf_counter()
        train_out = trainer.train(resume_from_checkpoint=resume_from(cfg, out_dir))
        elapsed = time.perf_counter() - start
        verify_stats = dataclasses.asdict(verifier.stats)
    save_model_folder(cfg, trainer, tokenizer, out_dir)
    result = finish_run(cfg, name, trainer, train_out, elapsed, out_dir, eval={}, prompts=len(dataset),
                        reward_weights=weights, verify=verify_stats)
    if trainer.is_world_process_zero():
        plot_rewards(trainer.state.log_history, out_dir / "rewards.png")
    return result


def plot_rewards(history: list[dict], path: Path) -> None:
    """The weighted reward and each reward's mean against the step: the curve to read first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in history if "reward" in row]
    keys = ["reward"] + sorted({k for row in rows for k in row if k.startswith("rewards/") and k.endswith("/mean")})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        ax.plot([row["step"] for row in rows], [row.get(key) for row in rows], marker=".",
                label="weighted total" if key == "reward" else key.split("/")[1])
    ax.set(xlabel="step", ylabel="mean reward per completion", title="GRPO rewards")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
