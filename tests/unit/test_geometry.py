"""The per-axis window rules of docs/semantics.md, checked against hand-worked windows."""

import itertools

import pytest

from natbench.errors import InvalidProblemError
from natbench.geometry import NAGeometry, axis_window, group_length


def test_odd_kernel_is_centred_and_shifts_at_borders():
    assert list(axis_window(5, 10, 3)) == [4, 5, 6]
    assert list(axis_window(0, 10, 3)) == [0, 1, 2]  # shifted right, not shrunk
    assert list(axis_window(9, 10, 3)) == [7, 8, 9]  # shifted left


def test_even_kernel_has_r_left_and_r_minus_1_right():
    assert list(axis_window(5, 10, 4)) == [3, 4, 5, 6]


def test_dilation_stays_in_group_and_shifts_inside_it():
    # L=10, d=3: group 1 is 1,4,7 (length 3); query 4 (local 1) with K=3 sees the whole group.
    assert group_length(10, 3, 0) == 4 and group_length(10, 3, 1) == 3
    assert list(axis_window(4, 10, 3, dilation=3)) == [1, 4, 7]
    assert list(axis_window(9, 10, 2, dilation=3)) == [6, 9]  # group 0, last local index


def test_stride_uses_the_centre_query_of_its_group():
    # s=3, K=3: queries 0,1,2 share leader 1 -> keys 0..2; 3,4,5 share leader 4 -> keys 3..5.
    assert [list(axis_window(i, 9, 3, stride=3)) for i in (0, 2, 3, 5)] == \
        [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]]


def test_causal_sees_only_the_past_and_does_not_shift():
    assert list(axis_window(0, 8, 3, causal=True)) == [0]
    assert list(axis_window(1, 8, 3, causal=True)) == [0, 1]
    assert list(axis_window(5, 8, 3, causal=True)) == [3, 4, 5]


@pytest.mark.parametrize("length,kernel,dilation,stride", [
    (n, k, d, s) for n in (5, 8, 13) for k in (1, 2, 3, 4, 5) for d in (1, 2, 3) for s in (1, 2)
    if k * d <= n and s <= k])
def test_non_causal_always_sees_exactly_k_keys_of_its_group(length, kernel, dilation, stride):
    for i in range(length):
        keys = list(axis_window(i, length, kernel, dilation, stride))
        assert len(keys) == kernel
        assert all(j % dilation == i % dilation and 0 <= j < length for j in keys)


@pytest.mark.parametrize("resolution,kernel,dilation,stride,message", [
    ((15, 15), (3, 9), (1, 2), 1, "axis 1: kernel_size 9 x dilation 2 > length 15"),
    ((8,), 0, 1, 1, "axis 0: kernel_size 0 < 1"),
    ((8,), 3, 1, 4, "axis 0: stride 4 is outside 1..kernel_size 3"),
    ((8, 8), 3, (1, 0), 1, "axis 1: dilation 0 < 1"),
])
def test_invalid_geometry_names_axis_and_numbers(resolution, kernel, dilation, stride, message):
    with pytest.raises(InvalidProblemError, match=message):
        NAGeometry.build(resolution, kernel, dilation, stride)


def test_rpb_needs_odd_kernel_non_causal_stride_one():
    geometry = NAGeometry.build((8, 8), (3, 4))
    with pytest.raises(InvalidProblemError, match="axis 1: relative positional bias needs an odd"):
        geometry.validate(rpb=True)
    NAGeometry.build((8, 8), 3).validate(rpb=True)


def test_per_axis_tuple_of_wrong_length_is_an_error():
    with pytest.raises(InvalidProblemError, match="kernel_size has 3 entries"):
        NAGeometry.build((8, 8), (3, 3, 3))


def test_keys_per_query_sum_matches_brute_force_product():
    geometry = NAGeometry.build((7, 6), (3, 4), (2, 1), (1, 2), (True, False))
    brute = 0
    for i, j in itertools.product(range(7), range(6)):
        brute += len(axis_window(i, 7, 3, 2, 1, True)) * len(axis_window(j, 6, 4, 1, 2, False))
    assert geometry.keys_per_query_sum() == brute
