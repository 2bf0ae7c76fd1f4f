"""Suite-wide settings: one intra-op thread.

The suite's models and batches are small, where a second thread gains little; on a busy 2-core machine
(CI beside other jobs) two threads per process oversubscribe the cores and slow small kernels tenfold.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
