"""Shards prepared with a text encoder (`vidiff prepare --text-encoder`): the captions' encodings stored
with the clips, read back by the loader and used by the text conditioning instead of the encoder."""

import csv
import json
import shutil

import pytest
import torch
from test_data import write_video
from test_text import needs_encoder

from vidiff.cli import main
from vidiff.conditioning import ConditioningConfig, ConditioningError, build_conditioning
from vidiff.data import DataError, build_dataset
from vidiff.data.prepare import prepare_shards
from vidiff.data.shards import TEXT_TOKENS
from vidiff.train.loader import build_loader

FRAMES, SIZE, LENGTH = 4, 16, 16
CAPTIONS = {"a.mp4": "a dog, running", "b.mp4": "a cat sleeps on a long wall in the evening sun", "c.mp4": ""}


@pytest.fixture(scope="module")
def encoder():
    from vidiff.nn.text import TextEncoder

    return TextEncoder(max_length=LENGTH)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three captioned videos (one caption empty): 3 + 2 + 1 clips of 4 frames."""
    root = tmp_path_factory.mktemp("captioned")
    for name, n in zip(CAPTIONS, (12, 8, 4)):
        write_video(root / name, n=n, h=24, w=24)
    with open(root / "captions.csv", "w", newline="") as fh:
        rows = csv.writer(fh)
        rows.writerow(["file", "caption"])
        rows.writerows(CAPTIONS.items())
    return root


@pytest.fixture(scope="module")
def text_shards(videos, encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("text-shards") / "prepared"
    prepare_shards(videos, out, FRAMES, SIZE, progress=False, text_encoder=encoder)
    return out


def _batch(out, size=6):
    ds = build_dataset(str(out), frames=FRAMES, size=SIZE)
    return ds, next(iter(build_loader(ds, size, seed=0, start_step=0, rank=0, world=1, workers=0)))


@needs_encoder
def test_stored_encodings_are_the_encoder_s_within_fp16_rounding(text_shards):
    ds, batch = _batch(text_shards)
    assert ds.text_embeddings["max_length"] == LENGTH and batch["text_tokens"].dtype == torch.float16
    cond = build_conditioning(ConditioningConfig(kind="text", text_max_length=LENGTH))
    cond.derive(ds)  # the shards' encoder is the model's
    keep = torch.tensor([True, False, True, True, True, True])
    stored = cond.training(batch, keep, "cpu")
    assert cond._cache is None  # the step ran no encoder
    on_the_fly = cond.training({"caption": batch["caption"]}, keep, "cpu")
    assert "" in batch["caption"] and len(set(batch["caption"])) == 3
    assert torch.equal(stored["text_mask"], on_the_fly["text_mask"]) and not stored["text_mask"][1].any()
    assert stored["text_tokens"].dtype == torch.float32
    # fp16 keeps 11 significant bits: a relative error of at most 2^-11, beside the encoder's fp32 noise
    torch.testing.assert_close(stored["text_tokens"], on_the_fly["text_tokens"], rtol=2**-11, atol=1e-5)


@needs_encoder
@pytest.mark.parametrize("change", ["max_length", "fingerprint"])
def test_shards_of_another_encoder_are_refused_in_one_line(text_shards, tmp_path, change):
    out = tmp_path / "prepared"
    shutil.copytree(text_shards, out)
    index = json.loads((out / "index.json").read_text())
    length = LENGTH
    if change == "max_length":
        length = 32  # the model reads captions of 32 tokens, the shards hold them cut at 16
    else:
        index["text_embeddings"]["fingerprint"] = "0123456789abcdef"
        (out / "index.json").write_text(json.dumps(index))
    cond = build_conditioning(ConditioningConfig(kind="text", text_max_length=length))
    with pytest.raises(ConditioningError, match="its captions were encoded by .* prepare the shards again") as e:
        cond.derive(build_dataset(str(out), frames=FRAMES, size=SIZE))
    assert "\n" not in str(e.value) and str(out) in str(e.value)


@needs_encoder
@pytest.mark.parametrize("damage", ["missing", "header"])
def test_damaged_stored_encoding_is_a_damaged_sample(text_shards, tmp_path, damage):
    out = tmp_path / "prepared"
    shutil.copytree(text_shards, out)
    index = json.loads((out / "index.json").read_text())
    first = index["shards"][0]
    start, end = first["offsets"][1], first["offsets"][2]  # the second sample of the first shard
    data = bytearray((out / first["name"]).read_bytes())
    name = data.index(TEXT_TOKENS.encode(), start, end)
    at = start + (name - start) // 512 * 512  # the member's tar header
    if damage == "missing":  # renamed: the sample has no encoding
        data[name : name + 4] = b"xext"
        header = data[at : at + 512]
        header[148:156] = b" " * 8
        data[at + 148 : at + 156] = f"{sum(header):06o}\0 ".encode()
    else:
        data[at + 512 + 1 : at + 512 + 4] = b"\xff{\x00"  # the .npy magic
    (out / first["name"]).write_bytes(bytes(data))
    ds = build_dataset(str(out), frames=FRAMES, size=SIZE)
    assert ds[0]["text_tokens"].shape[1] == ds.text_embeddings["dim"]
    with pytest.raises(DataError, match=rf"{first['name']}: sample .* is damaged .*{TEXT_TOKENS}"):
        ds[1]
    skipping = build_dataset(str(out), frames=FRAMES, size=SIZE, skip_bad_files=True)
    assert torch.equal(skipping[1]["text_tokens"], ds[2]["text_tokens"]) and skipping.skipped_bad == 1


@needs_encoder
def test_shards_without_encodings_fall_back_to_the_encoder(videos, tmp_path):
    out = tmp_path / "plain"
    prepare_shards(videos, out, FRAMES, SIZE, progress=False)
    ds, batch = _batch(out, 2)
    assert ds.text_embeddings is None and "text_tokens" not in batch
    cond = build_conditioning(ConditioningConfig(kind="text", text_max_length=LENGTH))
    got = cond.training(batch, torch.tensor([True, True]), "cpu")
    assert got["text_tokens"].shape[0] == 2 and len(cond._cache) == len(set(batch["caption"]))


@needs_encoder
def test_prepare_cli_stores_encodings(videos, tmp_path, capsys):
    out = tmp_path / "cli"
    main(["prepare", str(videos), str(out), "--frames", "4", "--size", "16", "--workers", "0",
          "--text-encoder", "--text-max-length", str(LENGTH)])  # fmt: skip
    assert f"--set conditioning.kind=text --set conditioning.text_max_length={LENGTH}" in capsys.readouterr().out
    ds = build_dataset(str(out), frames=FRAMES, size=SIZE)
    assert ds.text_embeddings["dim"] == 384 and ds[0]["text_tokens"].dtype == torch.float16
