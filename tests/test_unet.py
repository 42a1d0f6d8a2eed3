import pytest
import torch

from vidiff.diffusion.loss import DiffusionLoss
from vidiff.diffusion.process import Denoiser
from vidiff.errors import ConfigError
from vidiff.nn.layers import joint_attention_mask
from vidiff.nn.unet import UNet3D, UNetConfig

TINY = UNetConfig(
    base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(0, 1), head_dim=8, emb_dim=32
)


def randomise(net):
    """Zero-initialised output layers hide bugs; give every parameter a random value."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


@pytest.mark.parametrize("f,h,w", [(1, 8, 8), (4, 8, 12), (16, 12, 8)])
def test_shape(f, h, w):
    net = UNet3D(TINY)
    x = torch.randn(2, 3, f, h, w)
    assert net(x, torch.zeros(2)).shape == x.shape


def test_only_temporal_attention_mixes_frames():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 5, 8, 8, requires_grad=True)
    for temporal in (False, True):
        net = randomise(UNet3D(UNetConfig(**{**TINY.to_dict(), "temporal_attention": temporal}))).eval()
        out = net(x, torch.zeros(1))
        (grad,) = torch.autograd.grad(out[:, :, 2].sum(), x)
        per_frame = grad.abs().sum(dim=(0, 1, 3, 4))
        others = per_frame[[0, 1, 3, 4]]
        if temporal:
            assert (others > 1e-6).all(), "temporal attention should connect frames"
        else:
            assert per_frame[2] > 0 and others.max() == 0, f"frames mixed without temporal attention: {per_frame}"


def test_temporal_mask_isolates_frames():
    """Joint image-video mask: video frames and each appended image do not influence each other."""
    net = randomise(UNet3D(TINY)).eval()
    mask = joint_attention_mask(3, 2)
    x = torch.randn(1, 3, 5, 8, 8)
    out = net(x, torch.zeros(1), temporal_mask=mask)
    x2 = x.clone()
    x2[:, :, 3:] = torch.randn(1, 3, 2, 8, 8)  # change the images
    out2 = net(x2, torch.zeros(1), temporal_mask=mask)
    assert torch.allclose(out[:, :, :3], out2[:, :, :3], atol=1e-5)
    x3 = x.clone()
    x3[:, :, :3] = torch.randn(1, 3, 3, 8, 8)  # change the video
    out3 = net(x3, torch.zeros(1), temporal_mask=mask)
    assert torch.allclose(out[:, :, 3:], out3[:, :, 3:], atol=1e-5)
    x4 = x.clone()
    x4[:, :, 3] = 0  # change image 0: image 1 stays, image 0 changes
    out4 = net(x4, torch.zeros(1), temporal_mask=mask)
    assert torch.allclose(out[:, :, 4], out4[:, :, 4], atol=1e-5)
    assert not torch.allclose(out[:, :, 3], out4[:, :, 3], atol=1e-3)
    # per-example masks (b, f, f)
    out_b = net(x.expand(2, -1, -1, -1, -1), torch.zeros(2), temporal_mask=torch.stack([mask, mask]))
    assert torch.allclose(out_b[0], out[0], atol=1e-5)


def test_unseen_frame_count():
    net = randomise(UNet3D(TINY)).eval()
    x = torch.randn(1, 3, 40, 8, 8)  # longer than anything trained on
    assert torch.isfinite(net(x, torch.zeros(1))).all()
    assert net(x[:, :, :7], torch.zeros(1)).shape[2] == 7


def test_temporal_attention_is_shift_invariant():
    """Relative positions only: with attention limited to neighbouring frames, frame i of a clip and
    frame i − 1 of the same clip without its first frame see the same inputs at the same offsets, so
    they come out equal; an absolute position embedding would tell them apart."""
    from vidiff.nn.layers import TemporalAttention

    attn = randomise(TemporalAttention(16, head_dim=8)).eval()
    assert attn.rel_pos.bias.weight.abs().sum() > 0
    f = 8
    x = torch.randn(f, 16, 3, 3)  # (b f) c h w, b = 1
    band = lambda n: (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs() <= 1  # noqa: E731
    full = attn(x, f, band(f))
    shifted = attn(x[1:], f - 1, band(f - 1))
    torch.testing.assert_close(shifted[1:-1], full[2:-1], atol=1e-5, rtol=1e-5)  # interior frames
    bias = attn.rel_pos(f, "cpu")  # heads f f: constant along every diagonal (a Toeplitz matrix)
    assert torch.equal(bias[:, 1:, 1:], bias[:, :-1, :-1])
    assert not torch.allclose(full[2], attn(x, f)[2], atol=1e-4), "the band mask should matter"


def test_bad_input_shapes_are_named():
    net = UNet3D(TINY)
    with pytest.raises(ValueError, match="expected a video batch"):
        net(torch.randn(2, 3, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(1, 3, 2, 7, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(channel_mults=(1, 2), attention_levels=(3,))
    with pytest.raises(ConfigError, match="unknown UNet config keys"):
        UNetConfig.from_dict({"base_chanels": 3})


def test_class_conditioning_and_null_class():
    cfg = UNetConfig(**{**TINY.to_dict(), "num_classes": 3})
    net = randomise(UNet3D(cfg)).eval()
    x = torch.randn(3, 3, 2, 8, 8)
    y = net(x, torch.zeros(3), class_labels=torch.tensor([0, 1, -1]))
    y_null = net(x, torch.zeros(3), class_labels=torch.tensor([3, 3, 3]))
    assert not torch.allclose(y[0], y[1])
    assert torch.allclose(y[2], y_null[2])
    with pytest.raises(ValueError, match="class_labels"):
        net(x, torch.zeros(3))


def test_tiny_model_overfits_one_video():
    """A tiny model drives its training loss on one small video down by 10× (≈ 20 s here)."""
    torch.manual_seed(0)
    cfg = UNetConfig(
        base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), head_dim=16, emb_dim=64
    )
    den = Denoiser(UNet3D(cfg), "v_prediction")
    loss_fn = DiffusionLoss("v")
    t = torch.linspace(0, 1, 4)
    video = torch.stack(torch.meshgrid(t, torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij"))
    video = (video[1:2] * video[0:1] + video[2:3] * 0.5).expand(3, -1, -1, -1)  # c f h w, a moving gradient
    x = video[None].repeat(8, 1, 1, 1, 1).contiguous()
    opt = torch.optim.Adam(den.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        loss = loss_fn(den, x, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last < first / 10, f"loss {first:.4f} -> {last:.4f}"


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    net = randomise(UNet3D(TINY))
    ck = UNet3D(UNetConfig(**{**TINY.to_dict(), "gradient_checkpointing": True}))
    ck.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 3, 8, 8)
    grads = []
    for m in (net, ck):
        m.train()
        m.zero_grad()
        m(x, torch.zeros(2)).square().sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))


def test_text_cross_attention_respects_padding_null_and_frames():
    """Cross-attention to the text tokens: tokens change the output, padding does not, an all-False
    mask is the null condition (the same as no tokens at all), and no frame sees another."""
    cfg = UNetConfig(**{**TINY.to_dict(), "text_dim": 16, "text_cross_attention": True, "temporal_attention": False})
    net = randomise(UNet3D(cfg)).eval()
    plain = UNet3D(UNetConfig(**{**cfg.to_dict(), "text_cross_attention": False}))
    assert len([m for m in net.modules() if type(m).__name__ == "CrossAttention"]) > 0
    assert not [m for m in plain.modules() if type(m).__name__ == "CrossAttention"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 3, 8, 8, generator=g, requires_grad=True)
    tokens = torch.randn(2, 5, 16, generator=g)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    y = net(x, torch.zeros(2), text_tokens=tokens, text_mask=mask)
    # padding positions of example 0 take other values: nothing changes
    junk = tokens.clone()
    junk[0, 3:] = 100.0
    assert torch.allclose(net(x, torch.zeros(2), text_tokens=junk, text_mask=mask), y, atol=1e-5)
    # a real token of example 1 changes: its output changes
    other = tokens.clone()
    other[1, 4] = torch.randn(16, generator=g)
    assert not torch.allclose(net(x, torch.zeros(2), text_tokens=other, text_mask=mask)[1], y[1], atol=1e-4)
    # the same weights without the cross-attention blocks give another output: the blocks are used
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k in plain.state_dict()})
    assert not torch.allclose(plain.eval()(x, torch.zeros(2), text_tokens=tokens, text_mask=mask), y, atol=1e-4)
    null = net(x, torch.zeros(2), text_tokens=tokens, text_mask=torch.zeros_like(mask))
    none = net(x, torch.zeros(2), text_tokens=tokens[:, :0], text_mask=mask[:, :0])
    assert torch.allclose(null, none, atol=1e-5)
    assert not torch.allclose(null, y, atol=1e-4)
    (grad,) = torch.autograd.grad(y[:, :, 1].sum(), x)
    per_frame = grad.abs().sum(dim=(0, 1, 3, 4))
    assert per_frame[1] > 0 and per_frame[[0, 2]].max() == 0, f"cross-attention mixed frames: {per_frame}"
    with pytest.raises(ValueError, match="text_cross_attention"):
        UNet3D(UNetConfig(**{**TINY.to_dict(), "text_cross_attention": True}))


def _reversal_error(net) -> float:
    x = torch.randn(2, 3, 6, 8, 8)
    with torch.no_grad():
        forward, reversed_ = net(x, torch.zeros(2)), net(x.flip(2), torch.zeros(2)).flip(2)
    return ((forward - reversed_).abs().max() / forward.abs().max()).item()


def test_time_reversal_symmetry_is_broken_at_init():
    """The 1×3×3 convolutions never mix frames, so only temporal attention's relative position bias
    tells earlier from later. With a bias symmetric in j − i (zeros included) the network is exactly
    equivariant to reversing time, the symmetry gradient descent keeps on symmetric data — "moving left"
    and "moving right" then differ by nothing the network can see. The bias starts random, so it can."""
    net = randomise(UNet3D(TINY)).eval()
    torch.manual_seed(0)
    fresh = UNet3D(TINY)
    for new, old in zip(fresh.modules(), net.modules()):
        if hasattr(new, "rel_pos"):
            old.rel_pos.bias.weight.data.copy_(new.rel_pos.bias.weight.data)  # the initial bias, as built
    assert _reversal_error(net) > 1e-2
    for m in net.modules():
        if hasattr(m, "rel_pos"):
            w = m.rel_pos.bias.weight.data
            half = m.rel_pos.num_buckets // 2
            w[half:] = w[:half]  # b(d) = b(−d): the same bucket for past and future
    assert _reversal_error(net) < 1e-5


def test_relative_position_bias_inits():
    """ "zeros" leaves attention to content alone, and the network equivariant to reversing time."""
    zeros = UNetConfig(**{**TINY.to_dict(), "rel_pos_init": "zeros"})
    net, fresh = randomise(UNet3D(zeros)).eval(), UNet3D(zeros)
    for new, old in zip(fresh.modules(), net.modules()):
        if hasattr(new, "rel_pos"):
            old.rel_pos.bias.weight.data.copy_(new.rel_pos.bias.weight.data)  # the initial bias, as built
    assert _reversal_error(net) < 1e-5
    with pytest.raises(ValueError, match="rel_pos_init"):
        UNetConfig(**{**TINY.to_dict(), "rel_pos_init": "ones"})


def test_frame_index_embedding_gives_absolute_time_but_not_to_images():
    """Off (the paper): a clip of one frame repeated comes out the same at every frame, so frame
    number is invisible. On: frames differ by their index, a fresh model equals the paper's (zero
    start), and appended images and one-frame clips, which have no time, get no index."""
    x = torch.randn(1, 3, 1, 8, 8).expand(1, 3, 5, 8, 8)
    plain = randomise(UNet3D(TINY)).eval()
    out = plain(x, torch.zeros(1))
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-5)
    cfg = UNetConfig(**{**TINY.to_dict(), "frame_index_embedding": True})
    fresh = UNet3D(cfg)
    fresh.load_state_dict(
        {**plain.state_dict(), "extensions.frame_embed.weight": fresh.extensions.frame_embed.weight}, strict=True
    )
    assert torch.allclose(fresh.eval()(x, torch.zeros(1)), out, atol=1e-6)
    timed = randomise(UNet3D(cfg)).eval()
    out = timed(x, torch.zeros(1))
    assert (out[:, :, 1:] - out[:, :, :1]).abs().amax(dim=(0, 1, 3, 4)).min() > 1e-3
    video = torch.randn(1, 3, 3, 8, 8)
    image = torch.randn(1, 3, 1, 8, 8)
    joint = timed(torch.cat([video, image, image], 2), torch.zeros(1), temporal_mask=joint_attention_mask(3, 2))
    alone = timed(image, torch.zeros(1))
    torch.testing.assert_close(joint[:, :, 3:], alone.expand(1, 3, 2, 8, 8), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(joint[:, :, :3], timed(video, torch.zeros(1)), atol=1e-5, rtol=1e-5)


def test_frame_condition_product_lets_a_condition_act_differently_at_each_time():
    """With the frame index only added, two conditions differ by the same vector at every frame
    before the MLP; with `frame_condition_product` the difference changes with time (what a
    direction needs: early frames one way, late ones the other). A fresh model equals the
    additive one, and timeless frames (images, one-frame clips) still get no time."""
    added = UNetConfig(**{**TINY.to_dict(), "num_classes": 4, "frame_index_embedding": True})
    product = UNetConfig(**{**added.to_dict(), "frame_condition_product": True})
    features = torch.randn(5, TINY.base_channels)  # five frames' time features
    lam, two = torch.randn(TINY.emb_dim), torch.randn(2, TINY.emb_dim)  # a noise level's, two conditions' vectors
    for cfg, changes in ((added, False), (product, True)):
        net = randomise(UNet3D(cfg))
        a, b = (net.extensions.timed((lam + c).expand(5, -1), c.expand(5, -1), features) for c in two)
        spread = ((a - b) - (a - b).mean(0)).abs().max().item()
        assert (spread > 1e-3) == changes, (cfg.frame_condition_product, spread)
        no_time = torch.zeros(2, TINY.base_channels)
        assert torch.equal(net.extensions.timed(lam + two, two, no_time), lam + two)
    plain = randomise(UNet3D(added)).eval()
    fresh = UNet3D(product)
    extra = {k: v for k, v in fresh.state_dict().items() if k.startswith("extensions.frame_time")}
    fresh.load_state_dict(
        {**plain.state_dict(), **extra, "extensions.frame_mix.weight": fresh.extensions.frame_mix.weight}, strict=True
    )
    x, labels = torch.randn(2, 3, 4, 8, 8), torch.tensor([0, 3])
    torch.testing.assert_close(fresh.eval()(x, torch.zeros(2), labels), plain(x, torch.zeros(2), labels))
    with pytest.raises(ValueError, match="frame_condition_product needs frame_index_embedding"):
        UNetConfig(**{**TINY.to_dict(), "num_classes": 4, "frame_condition_product": True})
    with pytest.raises(ConfigError, match="frame_condition_product.*needs a class- or text-conditional model"):
        UNet3D(UNetConfig(**{**TINY.to_dict(), "frame_index_embedding": True, "frame_condition_product": True}))
    with pytest.raises(ConfigError, match="text_cross_attention attends to caption tokens: it needs a text-cond"):
        UNet3D(UNetConfig(**{**TINY.to_dict(), "text_cross_attention": True}))


def condition(net, tokens, mask):
    """The caption vector that a text model's frame-condition product multiplies time by."""
    return net.extensions.condition(None, tokens, mask, torch.float32)


def test_frame_condition_product_whitens_the_caption_on_its_own():
    """In a text model the product's vector is the caption's token mean, whitened by the running
    statistics of the captions seen in training (every way captions differ gets the same spread, so
    a direction word counts as much as a colour), not the attention pool that conditions the clip.
    The first training batch sets the statistics, later ones move them, eval leaves them; the null
    caption (all tokens masked) reads as the mean caption."""
    cfg = UNetConfig(
        **{**TINY.to_dict(), "text_dim": 8, "frame_index_embedding": True, "frame_condition_product": True}
    )
    net = randomise(UNet3D(cfg))
    pool = net.extensions.time_pool
    torch.manual_seed(0)
    spreads = torch.tensor([0.01, 0.03, 0.1, 0.3, 1.0, 5.0, 8.0, 10.0])  # very different, along
    mix = spreads[:, None] * torch.linalg.qr(torch.randn(8, 8)).Q  # random orthogonal directions
    tokens, mask = torch.randn(256, 3, 8) @ mix, torch.ones(256, 3, dtype=torch.bool)
    mask[0] = False  # a null caption
    cond, timed = net.train()._condition(None, tokens, mask, torch.float32), condition(net, tokens, mask)
    torch.testing.assert_close(cond, net.text_pool(tokens, mask))
    white = torch.linalg.lstsq(pool.proj.weight, (timed - pool.proj.bias).T).solution.T
    torch.testing.assert_close(white[0], torch.zeros(8), atol=1e-4, rtol=0)
    caption = tokens[1:].mean(1)
    before = torch.linalg.eigvalsh(caption.T.cov(correction=0))
    assert before.max() / before.min() > 1e3  # spreads a thousand-fold apart
    after = torch.linalg.eigvalsh(white[1:].T.cov(correction=0))
    torch.testing.assert_close(after, before / (before + pool.eps * before.max()), atol=1e-4, rtol=1e-3)
    kept = before > 0.1 * before.max()  # within a tenth of the largest: a spread near 1 each
    assert kept.sum() >= 2 and after[kept].min() > 0.9 and (before[kept].max() / before[kept].min()) > 2
    torch.testing.assert_close(pool.mean, caption.mean(0))
    other = torch.randn(16, 3, 8) @ mix
    condition(net, other, torch.ones(16, 3, dtype=torch.bool))
    torch.testing.assert_close(pool.mean, caption.mean(0).lerp(other.mean(1).mean(0), pool.momentum))
    seen = pool.mean.clone(), pool.cov.clone()
    condition(net.eval(), tokens, mask)
    assert torch.equal(pool.mean, seen[0]) and torch.equal(pool.cov, seen[1])  # eval leaves them
    timed = condition(net, tokens, mask)
    pool.load_state_dict({**pool.state_dict(), "cov": seen[1] * 4})  # the whitening follows a new cov
    after_load = condition(net, tokens, mask)
    torch.testing.assert_close(after_load - pool.proj.bias, (timed - pool.proj.bias) / 2)
    plain = UNet3D(UNetConfig(**{**cfg.to_dict(), "frame_condition_product": False}))
    assert plain.extensions.time_pool is None and plain.extensions.condition(None, tokens, mask, torch.float32) is None


def test_class_labels_are_not_read_back_from_the_device():
    """A forward on a device other than the CPU ("meta": no values at all) never reads the labels back
    to the host (a sync in every step); out-of-range labels are refused where they enter instead."""
    from vidiff.conditioning import ClassConditioning, ConditioningConfig
    from vidiff.errors import ConditioningError

    with torch.device("meta"), torch.no_grad():
        net = UNet3D(UNetConfig(**{**TINY.to_dict(), "num_classes": 3}))
        y = net(torch.zeros(2, 3, 4, 8, 8), torch.zeros(2), class_labels=torch.tensor([0, -1]))
    assert y.shape == (2, 3, 4, 8, 8) and y.device.type == "meta"
    cond = ClassConditioning(ConditioningConfig(kind="class"), num_classes=3)
    keep = torch.tensor([True, False])
    assert cond.training({"label": torch.tensor([2, 1])}, keep, "cpu")["class_labels"].tolist() == [2, -1]
    with pytest.raises(ConditioningError, match="class label 3, but the model has 3 classes 0..2"):
        cond.training({"label": torch.tensor([1, 3])}, keep, "cpu")


def test_a_class_conditional_network_compiles_to_one_graph():
    """Reading the labels' maximum back broke the compiled graph (7 breaks in this tiny UNet)."""
    import torch._dynamo as dynamo

    net = UNet3D(UNetConfig(**{**TINY.to_dict(), "num_classes": 3}))
    explained = dynamo.explain(lambda x: net(x, torch.zeros(2), class_labels=torch.tensor([0, -1])).square().mean())(
        torch.randn(2, 3, 4, 8, 8)
    )
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons[:2]
