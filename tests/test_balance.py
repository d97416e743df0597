"""Regularization balancing against counts computed by hand from kohya's rule."""

from __future__ import annotations

from pathlib import Path

from data.balance import balance_reg, count_samples
from data.folders import Subset


def _subset(name: str, n: int, repeats: int, is_reg: bool) -> Subset:
    folder = Path("/nowhere") / name
    return Subset(folder, repeats, name.split("_", 1)[1], [folder / f"{i:03d}.png" for i in range(n)], is_reg)


def test_seven_reg_images_fill_thirty_train_samples() -> None:
    train = [_subset("10_sls toy", 3, 10, False)]
    reg = [_subset("1_toy", 7, 1, True)]
    plan = balance_reg(train, reg)
    # Pass 1: 7; passes 2-4: 14, 21, 28; pass 5 stops after two images at 30.
    assert [e.times_used for e in plan.entries] == [5, 5, 4, 4, 4, 4, 4]
    assert plan.num_samples == 30 == count_samples(train)
    assert plan.unused == 0
    assert [e.path.name for e in plan.entries] == [f"{i:03d}.png" for i in range(7)]


def test_excess_reg_images_stay_unused() -> None:
    plan = balance_reg([_subset("10_sls toy", 3, 10, False)], [_subset("1_toy", 50, 1, True)])
    assert plan.num_samples == 30
    assert all(e.times_used == 1 for e in plan.entries)
    assert [e.path.name for e in plan.entries] == [f"{i:03d}.png" for i in range(30)]
    assert plan.unused == 20


def test_first_pass_counts_folder_repeats() -> None:
    # Train 2 × 5 = 10. Reg repeats 3: pass 1 gives 3, 6, 9; pass 2 adds 1 to the first image → 10.
    plan = balance_reg([_subset("5_a", 2, 5, False)], [_subset("3_b", 3, 3, True)])
    assert [e.times_used for e in plan.entries] == [4, 3, 3]
    assert plan.num_samples == 10 and plan.unused == 0


def test_overshoot_is_less_than_one_folder_repeat() -> None:
    plan = balance_reg([_subset("1_a", 1, 1, False)], [_subset("5_b", 4, 5, True)])
    assert [e.times_used for e in plan.entries] == [5]
    assert plan.unused == 3


def test_reg_folders_are_visited_in_order() -> None:
    # Train 1 × 7 = 7. Pass 1: folder x (2 each → 2, 4), then folder y (1 each → 5, 6); pass 2: x0 → 7.
    reg = [_subset("2_x", 2, 2, True), _subset("1_y", 2, 1, True)]
    plan = balance_reg([_subset("7_a", 1, 7, False)], reg)
    assert [(e.subset.name, e.times_used) for e in plan.entries] == [
        ("2_x", 3),
        ("2_x", 2),
        ("1_y", 1),
        ("1_y", 1),
    ]
    assert plan.num_samples == 7


def test_no_reg_or_no_train() -> None:
    assert balance_reg([_subset("10_a", 3, 10, False)], []).entries == []
    empty_train = balance_reg([], [_subset("1_b", 4, 1, True)])
    assert empty_train.entries == [] and empty_train.unused == 4
