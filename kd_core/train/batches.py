"""Which rows each training step takes: plain epochs, or labelled and transfer rows mixed.

Rows index `TrainingSet.inputs`: the labelled rows first (0 … N_l − 1), then the
transfer rows. Without a transfer set an epoch is one shuffled pass over the labelled
rows, drawn from the run's one generator exactly as before label budgets existed. With
one, the two streams draw from generators of their own, so a baseline that plans the
same steps but takes no transfer rows gets the very same labelled batches as its student.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from kd_core.train.labels import StepPlan

# Offsets that give the labelled and the transfer stream their own seeds.
LABELLED_STREAM, TRANSFER_STREAM, AUGMENT_STREAM = 1_000_003, 2_000_003, 3_000_017


def stream(seed: int, offset: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + offset)


class _Cycle:
    """An endless run of shuffled passes over n rows, taken k at a time."""

    def __init__(self, n: int, gen: torch.Generator, offset: int = 0):
        self.n, self.gen, self.offset = n, gen, offset
        self.perm, self.pos = torch.randperm(n, generator=gen), 0

    def take(self, k: int) -> torch.Tensor:
        out = []
        while k > 0:
            if self.pos == self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
            part = self.perm[self.pos : self.pos + k]
            self.pos += len(part)
            k -= len(part)
            out.append(part)
        return torch.cat(out) + self.offset if len(out) > 1 else out[0] + self.offset


class Batches:
    """Per-step row indices and how many of them are labelled.

    plan: rows per step and steps per epoch; `n_transfer`: transfer rows actually held
    (0 for a baseline or teacher, which follow the plan without them)."""

    def __init__(self, plan: StepPlan, n_labelled: int, n_transfer: int, seed: int, gen: torch.Generator):
        self.plan, self.n_labelled, self.gen = plan, n_labelled, gen
        self.mixed = plan.transfer_rows > 0
        if self.mixed:
            self.labelled = _Cycle(n_labelled, stream(seed, LABELLED_STREAM))
            self.transfer = _Cycle(n_transfer, stream(seed, TRANSFER_STREAM), n_labelled) if n_transfer else None

    def epoch(self, device: torch.device) -> Iterator[tuple[torch.Tensor, int]]:
        if not self.mixed:  # plain epochs: one permutation per epoch from the run's generator
            bs = self.plan.labelled_rows
            perm = torch.randperm(self.n_labelled, generator=self.gen).to(device)
            for i in range(self.plan.steps_per_epoch):
                idx = perm[i * bs : (i + 1) * bs]
                yield idx, len(idx)
            return
        for _ in range(self.plan.steps_per_epoch):
            idx = self.labelled.take(self.plan.labelled_rows)
            if self.transfer is not None:
                idx = torch.cat([idx, self.transfer.take(self.plan.transfer_rows)])
            yield idx.to(device), self.plan.labelled_rows
