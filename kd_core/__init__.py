"""KD Studio's core: datasets, model families, losses, the distillation engine,
metrics, the run store and background jobs. Never imports streamlit."""

__version__ = "0.1.0"
