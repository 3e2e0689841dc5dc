"""One trainer for every objective, on the transformers `Trainer` shell, and `run`, what `mcts-cot train` calls.

`transformers.Trainer` owns the loop, optimizer, schedule, logging, checkpoints and resume, accelerate
(DDP) and DeepSpeed. We own the two things TRL 1.x no longer gets right for MCTS pairs (docs/DESIGN.md
decision 10): the collation (`trainers.data`: token ids, EOS rules, masking, prefix sharing) and the loss
(`trainers.losses`: cDPO with per-pair ε, α·NLL, SimPO, SFT). `compute_loss` is the only override that
matters; `log` adds our metrics the way TRL does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from mcts_cot.errors import UserError
from trainers import losses, precision, prefix_sharing, reference, tree_packing
from trainers.config import TrainConfig
from trainers.data import DataStats, ListDataset, PairCollator, end_of_turn_id, load_pairs, load_sft


def forward_token_logps(model, batch: dict[str, Any], attn_implementation: str = "sdpa") -> torch.Tensor:
    """Per-token log-probs of the scored positions of a collated batch ([N, keep])."""
    T = batch["input_ids"].shape[1]
    if "segments" in batch or "tree_end" in batch:
        mask = (prefix_sharing.attention_mask(batch["segments"], T, attn_implementation) if "segments" in batch
                else tree_packing.attention_mask(batch["tree_end"], attn_implementation))
        if attn_implementation == "eager":  # eager attention adds the mask to the scores
            dtype = next(model.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    else:
        mask = batch["attention_mask"]
    out = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"],
                logits_to_keep=batch["keep"], use_cache=False)
    if "tree_end" in batch:  # tree packing: one row per response, gathered from the packed rows
        return tree_packing.token_logps(out.logits, batch)
    return losses.token_logps(out.logits, batch["targets"])


class WallClock(TrainerCallback):
    """`max_wall_s`: ends training after the step that passes the time limit, so a time-boxed run (the demo)
    keeps its time whatever the CPU; the model is saved as after a normal end."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.start >= self.seconds:
            control.should_training_stop = True
        return control


class MCTSTrainer(Trainer):
    """`Trainer` with our loss; the reference is cached (in the batch), a live model, or the LoRA base."""

    def __init__(self, *args, loss_settings: losses.LossSettings, ref_model=None, attn_implementation: str = "sdpa",
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_settings = loss_settings
        self.attn_implementation = attn_implementation
        self.ref_model = ref_model.to(self.args.device) if ref_model is not None else None
        self._metrics: dict[str, dict[str, list[torch.Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        per_token = forward_token_logps(model, inputs, self.attn_implementation)
        ref = None
        if self.loss_settings.objective in ("dpo", "cdpo"):
            ref = ((inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]) if "ref_chosen_logps" in inputs
                   else self._live_reference(model, inputs))
        loss, metrics = losses.compute(self.loss_settings, per_token, inputs, ref)
        metrics["masked_share"] = inputs["masked_tokens"] / inputs["response_tokens"].clamp(min=1)
        mode = "train" if model.training else "eval"
        for key, value in metrics.items():
            self._metrics[mode][key].append(value.detach().float())
        return (loss, None) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        """Tree packing shares what a batch's examples have in common: keep each problem's examples together."""
        if isinstance(self.data_collator, tree_packing.TreeCollator):
            return tree_packing.ProblemSampler((train_dataset or self.train_dataset).examples, self.args.seed)
        return super()._get_train_sampler(train_dataset)

    @torch.no_grad()
    def _live_reference(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """A frozen forward of the reference model, or of the policy with its LoRA adapters disabled."""
        if self.ref_model is not None:
            ref_model, ctx = self.ref_model, contextlib.nullcontext()
        else:
            ref_model = self.accelerator.unwrap_model(model)
            ctx = ref_model.disable_adapter()
        with ctx, self.accelerator.autocast():  # the policy's autocast (a separate model is not wrapped in it)
            per_token = forward_token_logps(ref_model, inputs, self.attn_implementation)
        logps = losses.sequence_logps(per_token, inputs["chosen_mask"], inputs["rejected_mask"],
                                      inputs["epsilon"].shape[0])
        return logps.chosen, logps.rejected

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation only needs the loss (and the metrics `compute_loss` records)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the means of our metrics since the last log (averaged over processes)."""
        mode = "train" if "loss" in logs or "train_loss" in logs else "eval"
        stored = self._metrics[mode]
        if stored:
            keys = sorted(stored)
            means = torch.stack([torch.stack(stored[k]).mean() for k in keys]).to(self.args.device)
            means = self.accelerator.reduce(means, reduction="mean")
            prefix = "eval_" if mode == "eval" else ""
            logs.update({prefix + k: round(v, 6) for k, v in zip(keys, means.tolist(), strict=True)})
            stored.clear()
        super().log(logs, start_time)


# ------------------------------------------------------------------------------------------------ run


@dataclasses.dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, Any]


def _data_files(cfg: TrainConfig) -> tuple[Path, Path | None]:
    if not cfg.data:
        raise UserError(f"objective {cfg.objective} trains on exported data: pass --data DATA_DIR")
    data = Path(cfg.data)
    stem = "sft" if cfg.objective == "sft" else "pairs"
    train, val = data / f"{stem}.jsonl", data / f"{stem}_val.jsonl"
    if not train.is_file():
        raise UserError(f"{train}: not found; --data must be a dir written by `mcts-cot export-pairs`")
    return train, (val if val.is_file() and val.stat().st_size else None)


def _model_name(cfg: TrainConfig, train_file: Path) -> str:
    """--model, else the data's `model` column (the model that generated it)."""
    if cfg.model.name:
        return cfg.model.name
    import orjson

    with open(train_file, "rb") as fh:
        first = orjson.loads(fh.readline() or b"{}")
    if not first.get("model"):
        raise UserError(f"{train_file}: no `model` column in the first row; pass --model")
    return first["model"]


def resolve_model_path(name: str) -> str:
    if Path(name).is_dir():
        return name
    from mcts_cot.models import resolve_model

    return resolve_model(name)


def _load(cfg: TrainConfig, path: str, eot_id: int, masking: bool) -> tuple[list, DataStats]:
    if cfg.objective == "sft":
        return load_sft(path, eot_id, cfg.max_length)
    return load_pairs(path, eot_id, masking, cfg.max_length, 0.0 if cfg.objective == "dpo" else cfg.epsilon)


def _dtype(cfg: TrainConfig) -> torch.dtype:
    """Training keeps float32 master weights unless asked otherwise (bf16: true adds autocast, on GPU or CPU)."""
    return {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[cfg.model.dtype]


def load_model(cfg: TrainConfig, path: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg), attn_implementation=cfg.attn_implementation,
                                                 trust_remote_code=cfg.model.trust_remote_code)
    model.config.use_cache = False
    return model


def apply_lora(cfg: TrainConfig, model):
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora.target_modules
    lora = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, task_type="CAUSAL_LM",
                      target_modules="all-linear" if targets == ["all-linear"] else targets)
    return get_peft_model(model, lora)


def warmup_arguments(ratio: float, version: str | None = None) -> dict[str, float]:
    """The TrainingArguments key that means "warm up over this fraction of the steps" on the installed
    transformers (or `version`): 5.x reads a float below 1 in `warmup_steps` as a ratio and has no
    `warmup_ratio`; 4.x has `warmup_ratio` and would take `warmup_steps=0.1` as 0.1 steps, i.e. no warmup."""
    import transformers

    major = int((version or transformers.__version__).split(".")[0])
    return {"warmup_steps": ratio} if major >= 5 else {"warmup_ratio": ratio}


def training_arguments(cfg: TrainConfig, out_dir: Path, has_eval: bool, cls=None, **extra):
    """`TrainingArguments` (or a subclass such as `trl.GRPOConfig`, with its `extra` keys) from the config."""
    from transformers import TrainingArguments

    # CPU has to be said explicitly, or a multi-process CPU launch (torchrun) trains each process alone.
    use_cpu = cfg.use_cpu if cfg.use_cpu is not None else not torch.cuda.is_available()
    kwargs = dict(
        output_dir=str(out_dir / "checkpoints"), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, **warmup_arguments(cfg.warmup_ratio),
        lr_scheduler_type=cfg.lr_scheduler_type, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, bf16=precision.resolve_bf16(cfg.bf16, use_cpu)[0],
        report_to=cfg.report_to or "none",
        gradient_checkpointing=cfg.gradient_checkpointing, remove_unused_columns=False,
        eval_strategy="steps" if cfg.eval_steps and has_eval else "no", eval_steps=cfg.eval_steps,
        deepspeed=cfg.deepspeed, ddp_find_unused_parameters=False, use_cpu=use_cpu,
    )
    kwargs.update(extra)
    kwargs.update(cfg.trainer_kwargs)
    return (cls or TrainingArguments)(**kwargs)


def resume_from(cfg: TrainConfig, out_dir: Path) -> str | None:
    if cfg.resume is False:
        return None
    if isinstance(cfg.resume, str):
        if not Path(cfg.resume).is_dir():
            raise UserError(f"resume: {cfg.resume} is not a checkpoint folder")
        return cfg.resume
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = out_dir / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last is None:
        raise UserError(f"resume: no checkpoint under {ckpt_dir}; drop --set resume=true to start fresh")
    return last


def _attach_reference(cfg, trainer: MCTSTrainer, model_path, files_examples, collator, eot_id) -> dict[str, Any]:
    """Cached reference log-probs for every file; the main process computes, the others read its file.

    They are computed under the trainer's own autocast (accelerate's, the one the policy's forward runs
    in) and with LoRA adapters off, so at step 0 policy and reference agree exactly on identical batches;
    the cache key holds the weight dtype, the autocast and the attention kernel."""
    args, model = trainer.args, trainer.model
    autocast_bf16 = trainer.accelerator.native_amp and trainer.accelerator.mixed_precision == "bf16"
    settings = reference.numerics(model, autocast_bf16, cfg.attn_implementation)
    settings.update(masking=cfg.masking, max_length=cfg.max_length, eot_id=eot_id)

    def compute_fn(examples):
        adapters_off = model.disable_adapter() if cfg.lora.enabled else contextlib.nullcontext()
        with trainer.accelerator.autocast(), adapters_off:
            return reference.compute(model, examples, collator, cfg.per_device_eval_batch_size,
                                     lambda m, b: forward_token_logps(m, b, cfg.attn_implementation))

    info = {}
    model.to(args.device)
    with _gathered(model):
        for path, examples in files_examples:
            cache = reference.cache_path(path, model_path, settings)
            with args.main_process_first(desc="reference log-probs"):
                hit = reference.attach(examples, cache, compute_fn)
            info[Path(path).name] = {"cache": str(cache), "hit": hit}
    return info


def _gathered(model):
    """Whole weights on every rank for the reference pass under ZeRO-3 (which loads them partitioned).

    Every rank enters (the gather is collective); inside, only the main process computes."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()))


OUTPUTS = ("metrics.json", "config.json", "model.safetensors", "adapter_config.json", "checkpoints")


def run(cfg: TrainConfig, out_dir: str | Path, overwrite: bool = False) -> RunResult:
    """Train as `cfg` says and write a model folder (model, tokenizer, config.yaml, metrics.json) to `out_dir`.

    A dir holding an earlier run's model is refused unless `overwrite`, or `resume` (which continues it)."""
    from transformers import AutoTokenizer

    from mcts_cot.io import claim_out_dir

    cfg.validate()
    claim_out_dir(out_dir, OUTPUTS, overwrite or cfg.resume is not False, "train")
    if overwrite and cfg.resume is False:  # else a later resume=true would continue the old run's last checkpoint
        shutil.rmtree(Path(out_dir) / "checkpoints", ignore_errors=True)
    if cfg.objective == "grpo":  # online: samples its own completions from prompts, no exported data
        from trainers import grpo

        return grpo.run(cfg, out_dir)
    out_dir = Path(out_dir)
    train_file, val_file = _data_files(cfg)
    name = _model_name(cfg, train_file)
    model_path = resolve_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eot_id = end_of_turn_id(tokenizer, cfg.eot_token)

    train_examples, train_stats = _load(cfg, str(train_file), eot_id, cfg.masking)
    val_examples, val_stats = _load(cfg, str(val_file), eot_id, cfg.masking) if val_file else ([], None)
    if not train_examples:
        raise UserError(f"{train_file}: no usable rows ({train_stats.describe()})")
    args = training_arguments(cfg, out_dir, has_eval=bool(val_examples))
    precision_log = precision.resolve_bf16(cfg.bf16, args.use_cpu)[1]
    for line in (train_stats, val_stats, precision_log):
        if line and args.process_index == 0:
            print(line if isinstance(line, str) else line.describe(), flush=True)

    collator = (tree_packing.TreeCollator(tokenizer.pad_token_id, cfg.packing_budget, cfg.pad_to_multiple_of)
                if cfg.tree_packing else
                PairCollator(tokenizer.pad_token_id, cfg.prefix_sharing and cfg.objective != "sft",
                             cfg.pad_to_multiple_of))
    if (args.deepspeed or args.deepspeed_plugin) and torch.distributed.is_initialized():
        # ZeRO-3 partitions weights while `from_pretrained` loads them (zero.Init), which needs DeepSpeed's comm
        # up; on GPU accelerate has done it, on CPU (gloo) it has not, so wrap the existing process group.
        import deepspeed

        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
    model = load_model(cfg, model_path)
    ref_model, ref_info = None, {}
    if cfg.uses_reference and cfg.reference == "live" and not cfg.lora.enabled:
        ref_model = load_model(cfg, model_path).eval().requires_grad_(False)
    if cfg.lora.enabled:
        model = apply_lora(cfg, model)

    settings = losses.LossSettings(cfg.objective, cfg.beta, cfg.alpha, cfg.simpo_gamma)
    trainer = MCTSTrainer(model=model, args=args, train_dataset=ListDataset(train_examples),
                          eval_dataset=ListDataset(val_examples) if val_examples else None, data_collator=collator,
                          processing_class=tokenizer, loss_settings=settings, ref_model=ref_model,
                          attn_implementation=cfg.attn_implementation,
                          callbacks=[WallClock(cfg.max_wall_s)] if cfg.max_wall_s else None)
    if cfg.uses_reference and cfg.reference == "cached":
        files = [(train_file, train_examples)] + ([(val_file, val_examples)] if val_examples else [])
        ref_info = _attach_reference(cfg, trainer, model_path, files, collator, eot_id)
    start = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=resume_from(cfg, out_dir))
    elapsed = time.perf_counter() - start
    eval_metrics = trainer.evaluate() if val_examples else {}
    save_model_folder(cfg, trainer, tokenizer, out_dir)

    return finish_run(cfg, name, trainer, train_out, elapsed, out_dir, **{
        "eval": eval_metrics, "data": {"train": dataclasses.asdict(train_stats),
                                       "val": dataclasses.asdict(val_stats) if val_stats else None},
        "reference": {"mode": cfg.reference if cfg.uses_reference else "none", "files": ref_info},
        "precision": {"bf16": args.bf16, "log": precision_log}})


def finish_run(cfg: TrainConfig, model: str, trainer, train_out, elapsed: float, out_dir: Path, **extra) -> RunResult:
    """metrics.json (what every objective reports: steps, throughput, wall time, peak memory, the log, plus the
    objective's own `extra`) and config.yaml, written by the main process; the run's result."""
    from mcts_cot.config import save_config
    from mcts_cot.io import write_json

    metrics = {
        "objective": cfg.objective, "model": model, "global_step": train_out.global_step,
        "world_size": trainer.args.world_size, "train": train_out.metrics, **extra,
        "pairs_per_second": train_out.metrics.get("train_samples_per_second"),
        "wall_seconds": round(elapsed, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        save_config(cfg, out_dir)
        write_json(out_dir / "metrics.json", metrics)
    return RunResult(out_dir, metrics)


def save_model_folder(cfg: TrainConfig, trainer: MCTSTrainer, tokenizer, out_dir: Path) -> None:
    """A normal HF model folder: full weights (LoRA merged unless lora.merge is false) + tokenizer."""
    if cfg.lora.enabled and cfg.lora.merge:
        if trainer.is_world_process_zero():
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(out_dir)
            tokenizer.save_pretrained(out_dir)
        return
    trainer.save_model(str(out_dir))
