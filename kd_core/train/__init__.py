"""Training: datasets, model families, losses, the engine, metrics and the run recorder."""
