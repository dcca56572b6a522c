"""KD Studio's core: datasets, model families, losses, the distillation engine,
metrics, the run store and background jobs. Never imports streamlit."""

import os

# torch's OpenMP workers spin-wait after every parallel region by default. When
# training runs in a worker thread beside another torch-using thread (the
# dashboard's script thread) or on a busy 2-core machine, the spinning teams
# starve each other: we measured a quick-start job go from 3 s to 32 s. Passive
# waiting must be chosen before torch (libgomp) is loaded; the user can override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
