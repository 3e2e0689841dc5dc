"""Training on exported MCTS data: `config` (TrainConfig), `data` (rows → batches), `prefix_sharing` (one
sequence per pair), `losses` (cDPO / SimPO / NLL), `reference` (cached reference log-probs) and `trainer`
(the `transformers.Trainer` subclass and `run`, what `mcts-cot train` calls)."""

from trainers.config import LoraConfig, TrainConfig

__all__ = ["LoraConfig", "TrainConfig"]
