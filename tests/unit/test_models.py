"""natbench.models: the networks' sizes against the papers, counted on the meta device."""

import pytest
import torch

from natbench.models import CONFIGS, NeighborhoodAttention, WindowAttention, count, create


@pytest.mark.parametrize("name", [name for name, c in CONFIGS.items() if not c.pair])
def test_every_model_is_within_2_percent_of_its_published_parameters_and_macs(name):
    counted, config = count(name), CONFIGS[name]
    assert counted.params / 1e6 == pytest.approx(config.params_m, rel=0.02)
    assert counted.macs / 1e9 == pytest.approx(config.gmacs, rel=0.02)


def test_dinat_has_nats_parameters_and_macs():
    for size in ("mini", "tiny", "small", "base"):
        assert count(f"dinat_{size}") == count(f"nat_{size}")


def _layers(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def test_dinat_dilates_every_other_block_as_far_as_each_stages_map_allows():
    with torch.device("meta"):
        model = create("dinat_tiny", backend="reference")
    stages = [[b.attn.dilation for b in stage] for stage in model.stages]
    assert stages[0] == [1, 8, 1] and stages[1] == [1, 4, 1, 4]
    assert stages[2] == [1, 2] * 9 and stages[3] == [1] * 5  # 56/7, 28/7, 14/7, 7/7


def test_swin_shifts_every_other_block_but_not_where_the_map_is_one_window():
    with torch.device("meta"):
        model = create("swin_tiny", backend="swin")
    shifted = [[b.attn.shifted for b in stage] for stage in model.stages]
    assert shifted[0] == [False, True] and shifted[3] == [False, False]  # the 7x7 map is one window


def test_a_map_smaller_than_the_kernel_is_padded_then_cropped():
    """At 64x64 NAT's last stage is 2x2, under its 7x7 kernel: it runs, and its output is the
    model's at the cropped size."""
    torch.manual_seed(0)
    model = create("nat_mini", backend="torch", image_size=64).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def test_a_model_refuses_a_backend_of_the_other_kind_and_unknown_names():
    from natbench.errors import SuiteError, UnsupportedError

    with pytest.raises(UnsupportedError, match="NAT and DiNAT models run on a neighborhood-attention backend"):
        create("nat_tiny", backend="swin")
    with pytest.raises(UnsupportedError, match="Swin models run on swin or swin-explicit"):
        create("swin_tiny", backend="natten")
    with pytest.raises(SuiteError, match="unknown model 'nat_huge'"):
        create("nat_huge")


def test_attention_is_counted_as_its_two_products():
    """NA: 2 x heads x N x K^2 x head dim; Swin: the same over padded windows."""
    from natbench import models

    with torch.device("meta"):
        na = NeighborhoodAttention(64, 2, 7, 1, None)
        wsa = WindowAttention(96, 3, 7, False, False)
        with models._counting() as total:  # the linears are counted by count()'s hooks, not here
            na(torch.empty(1, 56, 56, 64))
            assert total[0] == 2 * 2 * 56 * 56 * 49 * 32
        with models._counting() as total:
            wsa(torch.empty(1, 10, 10, 96))  # padded to 14x14: 4 windows of 49
            assert total[0] == 2 * 3 * 4 * 49 * 49 * 32


def test_a_block_pair_is_two_blocks_na_na_against_wsa_then_shifted_wsa():
    with torch.device("meta"):
        nat = create("nat_pair", backend="reference", image_size=56)
        swin = create("swin_pair", backend="swin", image_size=56)
        small = create("swin_pair", backend="swin", image_size=7)
    assert [type(b.attn).__name__ for b in nat.blocks] == ["NeighborhoodAttention"] * 2
    assert [b.attn.shifted for b in swin.blocks] == [False, True]
    assert [b.attn.shifted for b in small.blocks] == [False, False]  # one window: nothing to shift
    # equal work but for the attention's bias tables: (2K-1)^2 per head either way
    assert count("nat_pair", 56).params == count("swin_pair", 56).params
    assert count("nat_pair", 56).macs == count("swin_pair", 56).macs


def test_the_dense_reference_checks_models_whose_maps_it_can_hold_and_the_torch_na_the_rest():
    from natbench.case import ModelCase
    from natbench.models import _na_oracle

    assert _na_oracle(ModelCase.build("nat_tiny", 224)) == "reference"  # 56x56 = 3136 tokens
    assert _na_oracle(ModelCase.build("nat_tiny", 512)) == "torch"
    assert _na_oracle(ModelCase.build("nat_pair", 56)) == "reference"
    assert _na_oracle(ModelCase.build("nat_pair", 112)) == "torch"
