"""How a dataset is split: a stratified train/valid split, and class-balanced subsets for quick runs (--limit).

Both use a private generator seeded by `seed`, so a split never depends on the global random state.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Sequence

import numpy as np


def stratified_split(targets: Sequence[int], valid_size: float, seed: int = 42) -> tuple[list[int], list[int]]:
    """(train indices, valid indices): `valid_size` of every class goes to valid. Deterministic for a seed."""
    rng = np.random.default_rng(seed)  # a private generator: the split must not depend on global random state
    targets = np.asarray(targets)
    train, valid = [], []
    for label in np.unique(targets):
        indices = rng.permutation(np.flatnonzero(targets == label))
        n_valid = round(valid_size * len(indices))
        valid += indices[:n_valid].tolist()
        train += indices[n_valid:].tolist()
    return sorted(train), sorted(valid)


def balanced_subset(indices: Sequence[int], targets: Sequence[int], limit: int, seed: int = 42) -> list[int]:
    """At most `limit` of `indices`, taken round-robin over classes so every class is represented. limit<=0: all."""
    indices = list(indices)
    if limit <= 0 or len(indices) <= limit:
        return indices
    by_class = defaultdict(list)
    for index in np.random.default_rng(seed).permutation(indices).tolist():
        by_class[targets[index]].append(index)
    round_robin = [i for group in itertools.zip_longest(*by_class.values()) for i in group if i is not None]
    return sorted(round_robin[:limit])
