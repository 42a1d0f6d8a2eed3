"""Conditioning in one place: one object per kind (none, class, text).

Each object gives the three conditions the rest of vidiff needs, as the network's keyword tensors:
the training batch's condition with classifier-free dropout (§3.1: the null condition with
probability p), the condition of a sampling request (a prompt, or a class name or index), and the
null condition ∅ of a batch for classifier-free guidance. It also says what the data decides about
the model (the number of classes, the text encoder's width). Nothing else in vidiff branches on a
kind's name; the network gets tensors only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from vidiff.errors import ConditioningError

log = logging.getLogger("vidiff.conditioning")
KINDS = ("none", "class", "text")


@dataclass(frozen=True)
class ConditioningConfig:
    kind: str = "none"  # "none" | "class" | "text"
    text_encoder: str = ""  # local Hugging Face model folder; "" = the packaged MiniLM-L6
    text_max_length: int = 32
    text_cache_captions: int = 4096  # captions whose encodings training keeps (the most recently used)
    classes: tuple = ()  # class names, read from the data when training starts


class Conditioning:
    """No conditioning: the network gets no condition, and a prompt or class is an error."""

    kind = "none"
    guidable = False  # classifier-free guidance needs a condition and its null

    def __init__(self, config: ConditioningConfig, num_classes: int = 0):
        self.config = config

    def derive(self, dataset) -> tuple[dict, dict]:
        """What the data decides: (fields of the model's config, fields of the conditioning config)."""
        return self.network_fields(), {}

    def network_fields(self) -> dict:
        """Fields of the network's config this kind fixes without looking at the data."""
        return {}

    def problems(self, model) -> list:
        """What in the network's config (a UNetConfig) does not fit this kind."""
        if model.text_cross_attention:
            return [
                f"model.text_cross_attention attends to caption tokens: it needs conditioning.kind=text "
                f"(got {self.kind!r})"
            ]
        return []

    def training(self, batch: dict, keep: torch.Tensor, device) -> dict:
        """The condition of a training batch; where `keep` (b,) is False, the null condition."""
        return {}

    def request(self, num: int, prompt=None, class_label=None, device="cpu") -> dict:
        if prompt is not None or class_label is not None:
            raise ConditioningError("this model is unconditional: it takes no prompt or class label")
        return {}

    def null(self, cond: dict) -> dict:
        """∅ for the same batch."""
        return cond

    def like(self, items: Sequence[dict]) -> dict:
        """Request keywords (prompt / class_label) that condition one sample like each data item
        (dicts with "label" and "caption"): the conditions of the clips that FVD compares with."""
        return {}


def _per_sample(value, num: int, what: str) -> list:
    values = [value] * num if isinstance(value, (str, int)) else list(value)
    if len(values) != num:
        raise ConditioningError(f"{len(values)} {what} for {num} samples: give one, or one per sample")
    return values


class ClassConditioning(Conditioning):
    """A class index per video (−1: the null class ∅)."""

    kind = "class"
    guidable = True

    def __init__(self, config: ConditioningConfig, num_classes: int = 0):
        super().__init__(config)
        self.num_classes = num_classes
        self.classes = tuple(config.classes)

    def derive(self, dataset) -> tuple[dict, dict]:
        n = getattr(dataset, "num_classes", 0)
        if not n:
            raise ConditioningError(
                "conditioning.kind=class but the dataset has no class labels; add labels "
                "(sub-folders or a captions.csv with a label column) or use conditioning.kind=none"
            )
        return {"num_classes": n}, {"classes": tuple(getattr(dataset, "classes", None) or ())}

    def training(self, batch: dict, keep: torch.Tensor, device) -> dict:
        labels = batch["label"]  # on the CPU, from the loader: checked here, not in every forward on the device
        bad = labels[(labels < -1) | (labels >= self.num_classes)]
        if bad.numel():
            raise ConditioningError(
                f"the data gave class label {int(bad[0])}, but the model has {self.num_classes} "
                f"classes 0..{self.num_classes - 1}: train on the data the model was made for"
            )
        return {"class_labels": torch.where(keep, labels, -1).to(device)}

    def index(self, label: Union[int, str]) -> int:
        """A class index from an index or a class name, checked against the model's classes."""
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in self.classes:
                names = ", ".join(repr(c) for c in self.classes) or "(this model records no class names)"
                raise ConditioningError(f"unknown class {label!r}; the model's classes are {names}")
            return self.classes.index(label)
        i = int(label)
        if not -1 <= i < self.num_classes:
            names = f" ({', '.join(self.classes)})" if self.classes else ""
            raise ConditioningError(
                f"class {i} out of range: this model has {self.num_classes} classes "
                f"0..{self.num_classes - 1}{names}; −1 is the null class"
            )
        return i

    def request(self, num: int, prompt=None, class_label=None, device="cpu") -> dict:
        if prompt is not None:
            raise ConditioningError("this model is class-conditional: it takes a class (--class), not a prompt")
        if class_label is None:
            raise ConditioningError(
                "this model is class-conditional: pass class_label (--class NAME or index; -1 for unconditional)"
            )
        labels = [self.index(c) for c in _per_sample(class_label, num, "classes")]
        return {"class_labels": torch.tensor(labels, device=device)}

    def null(self, cond: dict) -> dict:
        return {**cond, "class_labels": torch.full_like(cond["class_labels"], -1)}

    def like(self, items: Sequence[dict]) -> dict:
        return {"class_label": [int(it["label"]) for it in items]}


class TextConditioning(Conditioning):
    """A caption per video, encoded by a frozen text encoder (loaded on first use); ∅ is the empty
    mask. During training a batch from shards prepared with the encoder carries the encodings
    (`text_tokens`, `text_mask`); otherwise the encoder runs on the training device, and the encodings
    of the last `text_cache_captions` captions used are kept there (a bounded cache: memory does not
    grow with the number of distinct captions)."""

    kind = "text"
    guidable = True

    def __init__(self, config: ConditioningConfig, num_classes: int = 0):
        super().__init__(config)
        self._encoder = None
        self._cache, self._cache_device = None, None

    @property
    def encoder(self):
        if self._encoder is None:
            from vidiff.nn.text import TextEncoder

            self._encoder = TextEncoder(self.config.text_encoder or None, max_length=self.config.text_max_length)
        return self._encoder

    def derive(self, dataset) -> tuple[dict, dict]:
        captions = getattr(dataset, "captions", None)
        if captions is not None and not any(c.strip() for c in captions):
            raise ConditioningError(
                "conditioning.kind=text but the data has no captions: add a captions.csv or "
                "metadata.jsonl with a caption column beside the videos, or use "
                "conditioning.kind=none"
            )
        stored = getattr(dataset, "text_embeddings", None)
        if stored:
            self.check_stored(stored, getattr(dataset, "spec", "the data"))
        return self.network_fields(), {}

    def check_stored(self, stored: dict, where: str) -> None:
        """ConditioningError unless captions encoded into the data (`stored`: a shard index's
        text_embeddings) came from this model's text encoder at its max_length."""
        enc = self.encoder
        have = (stored.get("fingerprint"), stored.get("max_length"))
        if have != (enc.fingerprint, enc.max_length):
            raise ConditioningError(
                f"{where}: its captions were encoded by {stored.get('encoder')!r} (fingerprint {have[0]}, "
                f"max_length {have[1]}), but this model's text encoder is {enc.name!r} (fingerprint "
                f"{enc.fingerprint}, max_length {enc.max_length}): prepare the shards again with "
                f"--text-encoder{' ' + self.config.text_encoder if self.config.text_encoder else ''} "
                f"--text-max-length {enc.max_length}, "
                f"or set conditioning.text_encoder / text_max_length to the shards' encoder"
            )

    def network_fields(self) -> dict:
        from vidiff.nn.text import text_encoder_dim

        return {"text_dim": text_encoder_dim(self.config.text_encoder or None)}

    def problems(self, model) -> list:
        return []

    def training(self, batch: dict, keep: torch.Tensor, device) -> dict:
        device = torch.device(device)
        if "text_tokens" in batch:  # encoded when the data was prepared (checked against the encoder in derive)
            tokens, mask = batch["text_tokens"].to(device).float(), batch["text_mask"].to(device)
            return {"text_tokens": tokens, "text_mask": mask & keep.to(device)[:, None]}
        if self._cache is None or self._cache_device != device:
            from vidiff.nn.text import EmbeddingCache

            self.encoder.model.to(device)
            self._cache = EmbeddingCache(self.encoder, max_captions=self.config.text_cache_captions)
            self._cache_device = device
        tokens, mask = self._cache.get(batch["caption"])  # on `device`; a caption seen lately is not encoded again
        return {"text_tokens": tokens, "text_mask": mask & keep.to(device)[:, None]}

    def request(self, num: int, prompt=None, class_label=None, device="cpu") -> dict:
        if class_label is not None:
            raise ConditioningError("this model is text-conditional: it takes a prompt (--prompt), not a class")
        if prompt is None:
            raise ConditioningError('this model is text-conditional: pass prompt (--prompt "...")')
        tokens, mask = self.encoder.encode(_per_sample(prompt, num, "prompts"))
        return {"text_tokens": tokens.to(device), "text_mask": mask.to(device)}

    def null(self, cond: dict) -> dict:
        return {**cond, "text_mask": torch.zeros_like(cond["text_mask"])}

    def like(self, items: Sequence[dict]) -> dict:
        return {"prompt": [it["caption"] for it in items]}


_KINDS = {"none": Conditioning, "class": ClassConditioning, "text": TextConditioning}


def build_conditioning(config: ConditioningConfig, num_classes: int = 0) -> Conditioning:
    if config.kind not in _KINDS:
        raise ConditioningError(f"conditioning.kind must be one of {', '.join(KINDS)}, got {config.kind!r}")
    return _KINDS[config.kind](config, num_classes)
