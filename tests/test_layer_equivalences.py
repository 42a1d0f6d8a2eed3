"""The CPU speed and memory savings compute exactly the paper's layers: the upsampling convolution
as one transposed convolution, and normalisations recomputed in the backward pass."""
import torch
import torch.nn.functional as F

from vidiff.layers import ResBlock, Upsample


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


def test_recomputed_norms_give_the_same_gradients_and_store_less():
    torch.manual_seed(0)
    block = ResBlock(8, 16, emb_dim=12).double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)  # conv2 is zero-initialised: make every path carry gradient
    x = torch.randn(6, 8, 5, 7, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(6, 12, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(6, 16, 5, 7, dtype=torch.float64)
    results = {}
    for recompute in (True, False):
        block.recompute_norms = recompute
        stored = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, s=stored: s.append(t.numel()) or t, lambda t: t):
            y = block(x, emb)
        grads = torch.autograd.grad(y, [x, emb, *block.parameters()], gy)
        results[recompute] = (y.detach(), grads, sum(stored))
    (y1, g1, n1), (y0, g0, n0) = results[True], results[False]
    assert torch.equal(y1, y0)
    for a, b in zip(g1, g0):
        assert (a - b).abs().max() < 1e-12
    assert n1 < n0 - 2 * 16 * 6 * 5 * 7  # at least two block-sized activations fewer
