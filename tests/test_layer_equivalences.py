"""The CPU speed and memory savings compute exactly the paper's layers: the upsampling convolution
as one transposed convolution, and normalisations (and the activations the convolutions read)
recomputed in the backward pass."""

import pytest
import torch
import torch.nn.functional as F

from vidiff.nn.layers import ResBlock, SpatialAttention, TemporalAttention, Upsample


def test_upsample_is_nearest_then_convolution():
    torch.manual_seed(0)
    up = Upsample(6).double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    y = up(x)
    ref = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    assert y.shape == (2, 6, 10, 14)
    assert (y - ref).abs().max() < 1e-12
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, up.conv.weight, up.conv.bias], gy)
    grads_ref = torch.autograd.grad(ref, [x, up.conv.weight, up.conv.bias], gy)
    for a, b in zip(grads, grads_ref):
        assert (a - b).abs().max() < 1e-10


@pytest.mark.parametrize("channels_last", [False, True])
def test_recomputed_norms_give_the_same_gradients_and_store_less(channels_last):
    torch.manual_seed(0)
    block = ResBlock(8, 16, emb_dim=12).double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)  # conv2 is zero-initialised: make every path carry gradient
    x = torch.randn(6, 8, 5, 7, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    emb = torch.randn(6, 12, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(6, 16, 5, 7, dtype=torch.float64)
    results = {}
    for recompute in (True, False):
        block.recompute_norms = recompute
        stored = {}  # storage -> numbers, each storage once
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t, s=stored: s.setdefault(t.untyped_storage().data_ptr(), t.numel()) and t, lambda t: t
        ):
            y = block(x, emb)
        grads = torch.autograd.grad(y, [x, emb, *block.parameters()], gy)
        results[recompute] = (y.detach(), grads, sum(stored.values()))
    (y1, g1, n1), (y0, g0, n0) = results[True], results[False]
    assert torch.equal(y1, y0)
    for a, b in zip(g1, g0):
        assert (a - b).abs().max() < 1e-12
    act = 16 * 6 * 5 * 7  # one block-sized activation
    params = sum(p.numel() for p in block.parameters())
    film = emb.numel() * 2 + 6 * 2 * 16  # the embedding, its SiLU and the scale/shift
    # the block stores its input (half as wide), the first convolution's output, its parameters and FiLM
    assert n1 <= act // 2 + act + params + film, f"stored {n1} numbers recomputing; an activation is {act}"
    # storing: the convolutions' inputs and the normalisations' outputs too
    assert n0 > n1 + 3 * act, f"stored {n0} numbers storing, {n1} recomputing; an activation is {act}"


def test_recomputed_norms_with_dropout_keep_the_mask():
    """With dropout in training the block stores the dropped activation; gradients equal the plain path."""
    block = ResBlock(8, 8, emb_dim=4, dropout=0.3).double().train()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(4, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(4, 4, dtype=torch.float64)
    results = []
    for recompute in (True, False):
        block.recompute_norms = recompute
        torch.manual_seed(3)
        y = block(x, emb)
        results.append((y.detach(), torch.autograd.grad(y.square().sum(), [x, *block.parameters()])))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert (a - b).abs().max() < 1e-12


def test_recomputed_attention_gives_the_same_gradients_and_stores_its_input_only():
    torch.manual_seed(0)
    x = torch.randn(6, 16, 4, 5, dtype=torch.float64, requires_grad=True)  # (b f) c h w with f = 3
    mask = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    for block, args in ((SpatialAttention(16, 8), ()), (TemporalAttention(16, 8), (3, mask))):
        block = block.double()
        with torch.no_grad():
            for p in block.parameters():
                p.normal_(0, 0.3)
        results = {}
        for recompute in (True, False):
            block.recompute = recompute
            stored = {}
            with torch.autograd.graph.saved_tensors_hooks(
                lambda t, s=stored: s.setdefault(t.untyped_storage().data_ptr(), t.numel()) and t, lambda t: t
            ):
                y = block(x, *args)
            grads = torch.autograd.grad(y.square().sum(), [x, *block.parameters()])
            results[recompute] = (y.detach(), grads, sum(stored.values()))
        (y1, g1, n1), (y0, g0, n0) = results[True], results[False]
        assert torch.equal(y1, y0)
        for a, b in zip(g1, g0):
            assert (a - b).abs().max() < 1e-12
        assert n1 <= x.numel() + sum(p.numel() for p in block.parameters()) < n0 - 3 * x.numel()


def test_the_network_compiles_to_one_graph():
    """Under torch.compile the recomputed norms take the plain path: dynamo traces the whole network
    (every option that changes the graph on) as one graph, without breaks or a recompile per width."""
    import torch._dynamo as dynamo

    from vidiff.nn.unet import UNet3D, UNetConfig

    cfg = UNetConfig(
        base_channels=16,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        head_dim=8,
        emb_dim=32,
        recompute_norms=True,
        recompute_attention=True,
        gradient_checkpointing=True,
        frame_index_embedding=True,
        frame_condition_product=True,
        num_classes=3,
    )
    net = UNet3D(cfg)
    labels = torch.tensor([0, 2])
    explained = dynamo.explain(lambda x: net(x, torch.zeros(2), labels).square().mean())(torch.randn(2, 3, 4, 16, 16))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons[:3]
