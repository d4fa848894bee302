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


def test_the_later_stage_pairs_have_swin_t_stage_shapes_the_same_for_both_families():
    # Swin-T's stages 2-4 at 224x224 input: 192 channels and 6 heads at 28x28, 384/12 at 14x14,
    # 768/24 at 7x7; the stage 4 Swin pair is one window, unshifted
    for stage, side in ((2, 28), (3, 14), (4, 7)):
        nat, swin = CONFIGS[f"nat_pair_s{stage}"], CONFIGS[f"swin_pair_s{stage}"]
        assert (nat.dim, nat.heads, nat.stage) == (swin.dim, swin.heads, swin.stage) == \
            (96 << (stage - 1), (3 << (stage - 1),), stage)
        assert count(f"nat_pair_s{stage}", side) == count(f"swin_pair_s{stage}", side)
    with torch.device("meta"):
        assert [b.attn.shifted for b in create("swin_pair_s4", "swin", 7).blocks] == [False, False]
        assert create("nat_pair_s3", "reference", 14).blocks[0].attn.heads == 12


def test_block_pairs_of_every_stage_share_one_column_a_family_and_name_their_stage():
    from natbench.console import network_view

    def row(model, backend, size):
        return {"op": "model", "model": model, "backend": backend, "image_size": size, "batch": 1,
                "dtype": "float32", "device": "cpu", "pass": "fwd", "status": "ok", "case_key": "k"}

    view, base = network_view([row("nat_pair", "natten", 28), row("nat_pair_s2", "natten", 28),
                               row("swin_pair_s2", "swin", 28)], "swin")
    assert base == "swin_pair swin"
    assert [r["backend"] for r in view] == ["nat_pair natten"] * 2 + ["swin_pair swin"]
    # the same map at two stages: two cases, each labelled with its shape
    assert view[0]["case_key"] != view[1]["case_key"] == view[2]["case_key"]
    assert view[1]["label"] == "stage 2: 192 ch, 6 heads"


def test_the_dense_reference_checks_models_whose_maps_it_can_hold_and_the_torch_na_the_rest():
    from natbench.case import ModelCase
    from natbench.models import _na_oracle

    assert _na_oracle(ModelCase.build("nat_tiny", 224)) == "reference"  # 56x56 = 3136 tokens
    assert _na_oracle(ModelCase.build("nat_tiny", 512)) == "torch"
    assert _na_oracle(ModelCase.build("nat_pair", 56)) == "reference"
    assert _na_oracle(ModelCase.build("nat_pair", 112)) == "torch"
