"""Landmark classifier: one module per course step (helpers, data, model, transfer, optimization, train)."""

import os

# PyTorch's CPU threads (OpenMP) busy-wait for work by default. When anything else needs a core at the same time
# (DataLoader workers decoding JPEGs, a second process), the waiting threads steal it and a training step on a
# 2-core laptop became ~50x slower (1.06 s instead of 0.02 s, measured). Passive waiting avoids that. It only takes
# effect if set before torch is first imported, which is why it is here: import src before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
