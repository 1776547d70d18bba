"""vistune: Visual Instruction Tuning (LLaVA) — data generation, two-stage training, evaluation, chat, serving."""

__version__ = "0.1.0"
