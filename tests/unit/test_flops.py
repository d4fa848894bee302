"""The FLOP convention: closed forms, causal key counts and the pass multipliers."""

from natbench.case import Case


def test_non_causal_na_is_4_b_h_n_kk_d():
    case = Case.build(2, 2, 4, 32, 56, 7)
    assert case.flops("na") == 4 * 2 * 4 * 56 * 56 * 49 * 32


def test_causal_na_counts_only_visible_keys():
    case = Case.build(1, 1, 1, 8, 5, 3, is_causal=True)
    keys = 1 + 2 + 3 + 3 + 3
    assert case.flops("na") == 2 * keys * (8 + 8)


def test_backward_is_twice_and_fwdbwd_thrice_forward():
    fwd = Case.build(2, 1, 2, 16, 14, 3)
    assert fwd.with_(pass_="bwd").flops() == 2 * fwd.flops()
    assert fwd.with_(pass_="fwdbwd").flops() == 3 * fwd.flops()


def test_wsa_counts_w_squared_keys_and_full_counts_n():
    case = Case.build(2, 1, 1, 8, (14, 14), 7)
    assert case.flops("wsa") == 2 * 196 * 49 * 16
    assert case.flops("full") == 2 * 196 * 196 * 16


def test_na_with_kernel_equal_map_is_full_attention():
    case = Case.build(2, 1, 3, 8, (6, 5), (6, 5))
    assert case.flops("na") == case.flops("full")
