"""`TrainConfig`: everything `mcts-cot train` needs, as one documented dataclass.

The defaults are the paper's joint recipe (Marco-o1 v2, Table 5 last row): cDPO with per-pair ε from the
exported MCTS confidence, shared-prefix masking, and α = 1 NLL on the chosen suffix. The recipes under
`configs/train/` switch parts off. The fields below the objective are the usual `TrainingArguments` subset;
anything else the Trainer accepts goes through `trainer_kwargs`.
"""

from __future__ import annotations

import dataclasses
import typing

from mcts_cot.config import ModelConfig, option, section
from mcts_cot.errors import UserError
from trainers.grpo import GRPOOptions
from trainers.trackers import check_trackers

Objective = typing.Literal["dpo", "cdpo", "simpo", "sft", "grpo"]
Reference = typing.Literal["cached", "live", "none"]


@dataclasses.dataclass
class LoraConfig:
    """Low-rank adapters through peft. Off by default: the embedded model is small enough to train fully."""

    enabled: bool = option(False, "Train LoRA adapters instead of all weights.")
    rank: int = option(16, "Adapter rank r.", ge=1)
    alpha: int = option(32, "Adapter scaling alpha (the update is scaled by alpha / rank).", ge=1)
    dropout: float = option(0.05, "Dropout on the adapter input.", ge=0, lt=1)
    target_modules: list = option(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                  "Module names that get adapters ('all-linear' as the only item: every linear layer).")
    merge: bool = option(True, "Save a merged full model at the end (loadable without peft); false saves the adapter only.")


@dataclasses.dataclass
class TrainConfig:
    """Preference (DPO / cDPO / SimPO, optionally + α·NLL) or SFT training on an exported data dir."""

    # TrainingArguments' and TRL's names for our keys, so a TRL-style YAML loads (a key under both names is an error).
    ALIASES: typing.ClassVar[dict[str, str]] = {"num_train_epochs": "epochs", "resume_from_checkpoint": "resume",
                                                "model_name_or_path": "model.name"}

    model: ModelConfig = dataclasses.field(
        default_factory=lambda: ModelConfig(name=""),
        metadata={"help": "The model to train; an empty name means the data's `model` column."})
    data: str = option("", "Data dir written by `mcts-cot export-pairs` (pairs.jsonl, pairs_val.jsonl, sft.jsonl, sft_val.jsonl).")
    objective: Objective = option("cdpo", "dpo (sigmoid), cdpo (label-smoothed DPO), simpo (reference-free, length-normalised), sft (NLL on sft.jsonl) or grpo (online, verified rewards on grpo.problems; no --data; beta is the KL weight).")
    beta: float = option(0.1, "DPO/cDPO temperature β; for simpo the reward scale β (SimPO uses ~2.0).", gt=0)
    epsilon: float | str = option(0.1, "cDPO/SimPO label smoothing ε: a float, or 'pairs' to read each pair's exported `epsilon` column (MCTS-DPO's visit confidence; it is 0.5, i.e. no preference signal, wherever both sides have equal visits). dpo always uses 0.", ge=0, lt=0.5)
    alpha: float = option(1.0, "Weight of the NLL term on the chosen response (joint objective; 0 turns it off). Ignored by sft.", ge=0)
    masking: bool = option(True, "Shared-prefix masking: prompt + shared reasoning prefix are context only and log-probs sum over the divergent suffix. false: the shared prefix counts in both log-probs (plain response-level DPO).")
    prefix_sharing: bool = option(False, "Pack prompt + prefix, chosen and rejected suffix in ONE sequence (rejected blind to chosen): one forward instead of two. Same loss and gradients.")
    tree_packing: bool = option(False, "Pack every response of a batch into token tries (trainers/tree_packing.py): the prompt and each shared segment written once, every branch blind to the others; batches hold whole problems. Same loss and gradients as prefix_sharing (set one of the two).")
    packing_budget: int = option(8192, "Tokens per packed sequence with tree_packing: a batch whose tries are larger is split into several (an example is never split).", ge=1)
    simpo_gamma: float = option(0.5, "SimPO target reward margin γ.", ge=0)
    reference: Reference = option("cached", "cached: reference log-probs computed once and cached in the data dir (one model in memory); live: a frozen reference forward every step; none: simpo / sft only.")
    eot_token: str = option("auto", "Token appended to complete suffixes/completions: auto = the token that closes an assistant turn in the chat template (<|im_end|>, <|eot_id|>, ...), else eos. Partial steps get nothing.")
    lora: LoraConfig = section(LoraConfig, "LoRA adapters (peft).")
    grpo: GRPOOptions = section(GRPOOptions, "objective grpo only: prompts, group size, sampling and reward weights (TRL GRPOTrainer).")

    learning_rate: float = option(5e-7, "Peak learning rate (AdamW).", ge=0)
    epochs: float = option(1.0, "Passes over the training file.", gt=0)
    max_steps: int = option(-1, "Stop after this many optimizer steps (-1: run all epochs).", ge=-1)
    max_wall_s: float | None = option(None, "Stop after the optimizer step that passes this many seconds of training (the schedule is not shortened; the model is saved as usual). For time-boxed runs such as the demo.", gt=0)
    per_device_train_batch_size: int = option(4, "Pairs (or SFT rows) per device per step.", ge=1)
    per_device_eval_batch_size: int = option(8, "Pairs per device per evaluation step.", ge=1)
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step.", ge=1)
    max_length: int = option(2048, "Longest sequence (prompt + prefix + one suffix). Longer rows have their suffixes cut from the end (counted and reported); rows whose context alone fills it are dropped (counted).", ge=1)
    pad_to_multiple_of: int | None = option(None, "Pad the sequence dimension to a multiple of this (128 suits FlexAttention block masks).", ge=1)
    warmup_ratio: float = option(0.1, "Fraction of steps with linear warmup (in [0, 1); given to transformers 4.x as warmup_ratio, to 5.x as warmup_steps, which reads a float below 1 as a ratio).", ge=0, lt=1)
    lr_scheduler_type: str = option("cosine", "Scheduler name understood by transformers.")
    weight_decay: float = option(0.0, "AdamW weight decay.", ge=0)
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", ge=0)
    logging_steps: int = option(10, "Log metrics every N steps.", ge=1)
    eval_steps: int | None = option(None, "Evaluate on the validation file every N steps (None: at the end only).", ge=1)
    save_steps: int = option(500, "Checkpoint every N steps (under OUT/checkpoints).", ge=1)
    save_total_limit: int | None = option(2, "Keep at most N checkpoints.", ge=1)
    seed: int = option(0, "Seed for data order and initialisation.", ge=0)
    bf16: bool | str = option(False, "bfloat16 mixed precision (autocast; master weights stay float32): true, false or auto = on where bf16 is native (a GPU that supports it, a CPU with avx512_bf16 / AMX, where it ran 1.5x faster), off elsewhere (an emulating CPU ran 27x slower). The log says which.")
    attn_implementation: str = option("sdpa", "sdpa (CPU and GPU; a dense 4-D mask with prefix sharing) or flex_attention (GPU; a block-sparse mask).")
    report_to: list = option([], "Trackers: tensorboard, wandb, trackio, ... (empty: console and metrics.json only).")
    gradient_checkpointing: bool = option(False, "Recompute activations in backward to save memory.")
    resume: bool | str = option(False, "true: continue from the last checkpoint in OUT/checkpoints; or a checkpoint folder.")
    deepspeed: str | None = option(None, "DeepSpeed JSON (configs/deepspeed/*.json); normally set through an accelerate config instead.")
    use_cpu: bool | None = option(None, "Train on CPU (None: when no CUDA device is present). Also what makes a multi-process CPU launch use DDP over gloo.")
    trainer_kwargs: dict = option({}, "Extra TrainingArguments, e.g. {optim: adamw_torch_fused}.")

    def validate(self) -> None:
        """Reject combinations that cannot work; called once every override has been applied."""
        if self.objective in ("dpo", "cdpo") and self.reference == "none":
            raise UserError(f"objective {self.objective} needs a reference: set reference to cached or live")
        if self.tree_packing and self.prefix_sharing:
            raise UserError("tree_packing and prefix_sharing: set one of the two (tree packing shares every prefix)")
        if isinstance(self.epsilon, str) and self.epsilon != "pairs":
            raise UserError(f"epsilon must be a float or 'pairs', got {self.epsilon!r}")
        check_trackers(self.report_to)
        if self.bf16 not in (True, False, "auto"):
            raise UserError(f"bf16: expected true, false or auto, got {self.bf16!r}")

    @property
    def uses_reference(self) -> bool:
        """Only DPO-style objectives compare against a reference policy."""
        return self.objective in ("dpo", "cdpo") and self.reference != "none"
