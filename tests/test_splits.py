"""Specification of src/splits.py: stratified splits and class-balanced subsets."""

from collections import Counter

import numpy as np
import pytest

from src.splits import balanced_subset, stratified_split


def test_stratified_split_takes_valid_size_of_every_class():
    targets = [0] * 10 + [1] * 10 + [2] * 10
    train, valid = stratified_split(targets, valid_size=0.2, seed=0)
    assert Counter(targets[i] for i in valid) == {0: 2, 1: 2, 2: 2}
    assert Counter(targets[i] for i in train) == {0: 8, 1: 8, 2: 8}
    assert sorted(train + valid) == list(range(30))


def test_stratified_split_keeps_unequal_classes_in_proportion():
    targets = [0] * 20 + [1] * 5
    _, valid = stratified_split(targets, valid_size=0.2, seed=0)
    assert Counter(targets[i] for i in valid) == {0: 4, 1: 1}


def test_stratified_split_is_deterministic_for_a_seed_and_changes_with_it():
    targets = [0] * 10 + [1] * 10 + [2] * 10
    assert stratified_split(targets, 0.2, seed=1) == stratified_split(targets, 0.2, seed=1)
    assert stratified_split(targets, 0.2, seed=1)[1] != stratified_split(targets, 0.2, seed=2)[1]


def test_stratified_split_ignores_the_global_random_state():
    targets = [0] * 10 + [1] * 10
    np.random.seed(0)
    first = stratified_split(targets, 0.2, seed=1)
    np.random.seed(123)
    assert stratified_split(targets, 0.2, seed=1) == first


def test_balanced_subset_with_limit_n_classes_picks_one_index_per_class():
    targets = [0] * 10 + [1] * 10 + [2] * 10
    chosen = balanced_subset(range(30), targets, limit=3, seed=0)
    assert sorted(targets[i] for i in chosen) == [0, 1, 2]


def test_balanced_subset_takes_an_equal_share_of_each_class():
    targets = [0] * 50 + [1] * 10 + [2] * 10
    chosen = balanced_subset(range(70), targets, limit=15, seed=0)
    assert Counter(targets[i] for i in chosen) == {0: 5, 1: 5, 2: 5}
    assert len(set(chosen)) == 15


@pytest.mark.parametrize("limit", [0, -1])
def test_balanced_subset_with_limit_zero_or_negative_keeps_everything(limit):
    targets = [0, 0, 1, 1, 2]
    assert balanced_subset([4, 0, 2, 1, 3], targets, limit=limit) == [4, 0, 2, 1, 3]
