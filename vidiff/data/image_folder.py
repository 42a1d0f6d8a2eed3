"""A folder of images as a dataset of one-frame videos, for joint image-video training.

Every ``.png .jpg .jpeg .webp`` file under the root (recursively, sorted) is one item: the image
converted to RGB, resized so that it just covers ``size`` and centre cropped, optionally flipped, as a
float32 ``(c 1 h w)`` video in [-1, 1]. The flip is drawn from the generator given to
``item(index, generator)`` (training seeds it from (seed, step)); ``dataset[index]`` draws it from
torch's global RNG. Labels and captions come from a ``captions.csv`` /
``metadata.jsonl`` file or from class sub-folders, as for :class:`~vidiff.data.VideoFolder` (see
:mod:`vidiff.data.annotations`). Items are dicts ``{"video", "label", "caption"}``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vidiff.data.annotations import load_annotations
from vidiff.errors import DataError
from vidiff.io.files import IMAGE_EXTENSIONS, find_files
from vidiff.io.frames import center_crop, cover_shape, parse_size, to_model_video


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as uint8 RGB (h, w, c), optionally resized to cover ``size`` and centre cropped."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None:
                nh, nw = cover_shape(im.height, im.width, *size)
                im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=2.0)
            frame = np.asarray(im)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"{path}: cannot read this image ({type(e).__name__}: {e}); it is corrupt or not an image; "
            f"re-save or remove it"
        ) from e
    if size is not None:
        frame = center_crop(frame[None], *size)[0]
    return frame


class ImageFolder(Dataset):
    """Images as one-frame videos (see module docstring).

    Args:
        root: folder searched recursively for images.
        size: output size, an int or (h, w).
        flip: randomly flip images left-right.
        labels, captions: as for :class:`~vidiff.data.VideoFolder`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int | tuple[int, int],
        flip: bool = False,
        labels: str | None = "auto",
        captions: str | None = "auto",
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder; give a folder that holds images")
        self.size, self.flip = parse_size(size), flip
        self.files = [p.relative_to(self.root).as_posix() for p in find_files(self.root, IMAGE_EXTENSIONS)]
        if not self.files:
            raise DataError(
                f"{self.root}: no images found (searched recursively for {' '.join(IMAGE_EXTENSIONS)}); "
                f"put images there or use builtin:moving-shapes"
            )
        self.labels, self.captions, self.classes = load_annotations(self.root, self.files, labels, captions)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        return self.item(index, None)

    def item(self, index: int, generator: Optional[torch.Generator]) -> dict:
        """Image ``index`` with its flip drawn from ``generator`` (None: torch's global RNG)."""
        frame = load_image(self.root / self.files[index], self.size)
        flip = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        video = to_model_video(frame[None], flip=flip)  # (c, 1, h, w)
        return {"video": video, "label": self.labels[index], "caption": self.captions[index]}
