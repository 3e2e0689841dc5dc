"""mcts-cot: MCTS reasoning-tree data (search → export-pairs → train → eval) for reasoning models."""

__version__ = "0.1.0"
