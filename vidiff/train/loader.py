"""The training data loader: a batch sampler that draws each step's global batch from (seed, step),
the joint image-video dataset (§3.2), and the collate function.

Every random draw of the data is a function of (seed, step): the batch sampler yields keys
(index, item seed) for this process's shard of the global batch, and a dataset whose items are
random (crops, flips, the images of joint training) draws them from a generator seeded by the
item seed (its `item(index, generator)` method). So loader workers, several processes and a
resumed run see the same items as one uninterrupted process.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + salt) % (2**63))


def get_item(dataset: Dataset, index: int, generator: torch.Generator) -> dict:
    """Item `index`, its randomness drawn from `generator` where the dataset has any."""
    item = getattr(dataset, "item", None)
    return item(index, generator) if item is not None else dataset[index]


class StepBatchSampler(Sampler):
    """Yields, for each step from `start`, this process's shard of a global batch of keys
    (dataset index, item seed) drawn from (seed, step)."""

    def __init__(self, n: int, batch: int, seed: int, start: int, rank: int, world: int):
        self.n, self.batch, self.seed, self.start, self.rank, self.world = n, batch, seed, start, rank, world

    def __iter__(self):
        step = self.start
        per = self.batch // self.world
        while True:
            g = step_generator(self.seed, step, 1)
            idx = torch.randint(self.n, (self.batch,), generator=g)
            seeds = torch.randint(2**62, (self.batch,), generator=g)
            shard = slice(self.rank * per, (self.rank + 1) * per)  # the same shard as the noise
            yield list(zip(idx[shard].tolist(), seeds[shard].tolist()))
            step += 1

    def __len__(self):
        return 2**31


class Keyed(Dataset):
    """A dataset indexed by the sampler's keys (index, item seed)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        return get_item(self.dataset, index, torch.Generator().manual_seed(seed))


class JointImageVideo(Dataset):
    """Appends `k` independent images to each video along the frame axis (§3.2): from an image
    dataset, or single frames of other videos of the same dataset."""

    def __init__(self, videos: Dataset, k: int, images: Optional[Dataset] = None):
        self.videos, self.k, self.images = videos, k, images

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return self.item(i, torch.Generator().manual_seed(i))

    def item(self, i: int, generator: torch.Generator) -> dict:
        item = dict(get_item(self.videos, i, generator))
        src = self.images if self.images is not None else self.videos
        frames = []
        for j in torch.randint(len(src), (self.k,), generator=generator).tolist():
            v = get_item(src, j, generator)["video"]  # c f h w
            frames.append(v[:, int(torch.randint(v.shape[1], (), generator=generator))])
        item["video"] = torch.cat([item["video"], torch.stack(frames, dim=1)], dim=1)  # c (f + k) h w
        return item


def collate(items: list) -> dict:
    return {"video": torch.stack([it["video"] for it in items]),
            "label": torch.tensor([int(it.get("label", -1)) for it in items]),
            "caption": [it.get("caption", "") for it in items]}


def build_loader(dataset: Dataset, batch_size: int, seed: int, start_step: int, rank: int, world: int,
                 num_workers: int) -> DataLoader:
    sampler = StepBatchSampler(len(dataset), batch_size, seed, start_step, rank, world)
    return DataLoader(Keyed(dataset), batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      persistent_workers=num_workers > 0)
