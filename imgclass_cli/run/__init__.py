"""Run: the run directory, checkpoints, the training loop, evaluation and prediction, export."""
