"""Training: the brains, datasets, checkpoints, model building, the recipe's input checks and schedules."""
