"""Which panorama each training sample is: one global stream of sample positions.

Position p (0, 1, 2, … over the whole run) is panorama ``perm_e[p mod n]`` with epoch e = p // n and
``perm_e`` a seeded permutation of the n panoramas. An optimizer step consumes
``batch_size × processes × accumulation`` consecutive positions; within it, micro-step a of process r
takes ``batch_size`` positions starting at ``start + (a·processes + r)·batch_size``. So the data
order (and, through :func:`pano360.training.augment.sample_generator`, every random draw of a sample)
depends only on the seed and the number of samples seen: resume is exact, and 2 processes with batch
1 see what 1 process with batch 2 sees.
"""

from __future__ import annotations

import numpy as np
import torch


class SampleOrder:
    """Seeded epoch permutations of ``n`` items (``index(position)``)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = shuffle
        self._epoch = -1
        self._perm: list[int] = []

    def _permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, 0]).generate_state(1)
        generator = torch.Generator().manual_seed(int(state[0]))
        return torch.randperm(self.n, generator=generator).tolist()

    def index(self, position: int) -> int:
        epoch, offset = divmod(int(position), self.n)
        if epoch != self._epoch:
            self._perm, self._epoch = self._permutation(epoch), epoch
        return self._perm[offset]


def micro_batch_positions(samples_seen: int, micro_step: int, rank: int, processes: int,
                          batch_size: int) -> list[int]:
    """The sample positions of one process's micro-batch (see the module docstring)."""
    start = samples_seen + (micro_step * processes + rank) * batch_size
    return list(range(start, start + batch_size))
