"""The training data loader: a batch sampler that draws each step's global batch from (seed, step),
the joint image-video dataset (§3.2), and the collate function.

Every random draw of the data is a function of (seed, step): the batch sampler yields keys
(index, item seed) for this process's shard of the global batch, and a dataset whose items are
random (crops, flips, the images of joint training) draws them from a generator seeded by the
item seed (its `item(index, generator)` method). So loader workers, several processes and a
resumed run see the same items as one uninterrupted process.

Datasets read in epochs (prepared shards: an `epoch_order(seed, epoch, rank, world)` method) take
their indices from that order instead of drawing them: each process takes the next positions of its
share of the epoch, which a step fixes, so every clip is seen once an epoch and resume stays exact.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vidiff import spread

log = logging.getLogger("vidiff.train")
MAX_AUTO_WORKERS = 8


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


class EpochBatchSampler(Sampler):
    """Yields, for each step from `start`, this process's keys (dataset index, item seed): the indices
    are the next positions of the process's share of the dataset's epoch order, the seeds those of
    `StepBatchSampler`."""

    def __init__(self, dataset, batch: int, seed: int, start: int, rank: int, world: int):
        self.dataset, self.batch, self.seed, self.start = dataset, batch, seed, start
        self.rank, self.world = rank, world
        self.length = dataset.epoch_length(world)

    def __iter__(self):
        per = self.batch // self.world
        orders: dict = {}
        step = self.start
        while True:
            g = step_generator(self.seed, step, 1)
            torch.randint(2**31, (self.batch,), generator=g)  # the draw StepBatchSampler makes for its indices
            seeds = torch.randint(2**62, (self.batch,), generator=g)[self.rank * per : (self.rank + 1) * per]
            idx = []
            for p in range(step * per, (step + 1) * per):
                epoch, q = divmod(p, self.length)
                if epoch not in orders:
                    orders = {e: o for e, o in orders.items() if e >= epoch - 1}
                    orders[epoch] = self.dataset.epoch_order(self.seed, epoch, self.rank, self.world)
                idx.append(int(orders[epoch][q]))
            yield list(zip(idx, seeds.tolist()))
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
    batch = {
        "video": torch.stack([it["video"] for it in items]),
        "label": torch.tensor([int(it.get("label", -1)) for it in items]),
        "caption": [it.get("caption", "") for it in items],
    }
    if items and all("text_tokens" in it for it in items):  # the captions' encodings, stored with the clips
        tokens = [it["text_tokens"] for it in items]  # each (n_i, d)
        lengths = torch.tensor([len(t) for t in tokens])
        batch["text_tokens"] = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True)  # (b, n, d), zero padded
        batch["text_mask"] = torch.arange(batch["text_tokens"].shape[1]) < lengths[:, None]  # (b, n)
    return batch


def num_workers(setting, dataset: Dataset, local_world: int = 1, device: str = "cpu") -> tuple[int, str]:
    """The loader workers for `data.num_workers` (a count, or "auto") and why. "auto": one per core
    this process may use but one (the training step's), at most MAX_AUTO_WORKERS; none when training
    on the CPU from data whose items are cheap to make (built-in, prepared shards), since the step
    then uses every core and a worker costs more to hand an item over than the item costs."""
    if str(setting) != "auto":
        return int(setting), f"data.num_workers={setting}"
    base = getattr(dataset, "videos", dataset)  # joint image-video training wraps the clips
    if device == "cpu" and getattr(base, "items_are_cheap", False):
        return 0, f"data.num_workers=auto: {type(base).__name__} items are cheap, made in the training process"
    cores = max(1, spread.usable_cores() // max(1, local_world))
    n = max(0, min(cores - 1, MAX_AUTO_WORKERS))
    return n, f"data.num_workers=auto: {cores} core{'s' if cores > 1 else ''} for this process, one kept for training"


def build_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    start_step: int,
    rank: int,
    world: int,
    workers: int,
    prefetch_factor: int = 4,
) -> DataLoader:
    """Batches of `dataset` from step `start_step` on, made by `workers` processes (0: this one), each
    keeping `prefetch_factor` batches ready."""
    base = getattr(dataset, "videos", dataset)  # joint image-video training wraps the clips
    if hasattr(base, "epoch_order"):
        sampler = EpochBatchSampler(base, batch_size, seed, start_step, rank, world)
    else:
        sampler = StepBatchSampler(len(dataset), batch_size, seed, start_step, rank, world)
    extra = dict(persistent_workers=True, prefetch_factor=prefetch_factor) if workers > 0 else {}
    return DataLoader(Keyed(dataset), batch_sampler=sampler, num_workers=workers, collate_fn=collate, **extra)
