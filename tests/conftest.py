"""Suite-wide settings: deterministic, single-threaded, never on the network."""

import os

# Tiny tensors run fastest on one thread, and on a busy 2-core CI machine extra OpenMP
# threads only fight each other (gradchecks went from ~1 s to ~100 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RLS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
