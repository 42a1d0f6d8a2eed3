"""Prepared shards: a dataset's videos decoded once into fixed-size uint8 clips in WebDataset tar files.

``vidiff prepare SRC OUT`` (:func:`vidiff.data.prepare.prepare_shards`) writes, into OUT,

- ``shards-000000.tar``, ``shards-000001.tar``, ...: WebDataset shards (plain USTAR tar files). Sample
  ``KEY`` (the clip's number, 9 digits) is ``KEY.npy`` (uint8 array, c f h w), ``KEY.json``
  (``{"file", "start", "fps", "caption", "label"}``), and ``KEY.cls`` (label) / ``KEY.txt`` (caption)
  where the clip has one, so ``webdataset.WebDataset(urls).decode()`` reads them as any other shards;
  prepared with a text encoder (``vidiff prepare --text-encoder``), also ``KEY.text_tokens.npy``: the
  encoder's output for the caption, float16 (tokens, d), its padding left out;
- ``index.json``: the clip shape, the class names, the text encoder that made ``text_tokens`` (its name,
  fingerprint, max_length and width, under ``text_embeddings``), and for every shard its number of clips
  and the byte offset of each sample in it (how training reads clips by random access and resumes exactly).

:class:`ShardDataset` reads them: ``--data OUT`` (a folder), a path or URL of the index, or a pattern
of shards (``OUT/shards-{000000..000009}.tar``, ``https://host/data/shards-{000000..000099}.tar``,
``pipe:aws s3 cp s3://bucket/shards-{000000..000099}.tar -``); the index is looked up where the
shards are. Shards that are not local files are fetched once, whole, through WebDataset's ``gopen``
into a local cache folder (``cache_dir``) and read from there.

The order of training (:meth:`ShardDataset.epoch_order`) is a function of (seed, epoch, number of
processes): each epoch the shards are shuffled, their clips concatenated and cut into one contiguous
range per process (so a process reads about 1/world of the shards), and each range is shuffled within a
window of ``window`` clips (a clip moves at most that far: reads stay local, like a shuffle buffer). A
process's batch at step s is the next positions of its range; epochs follow each other without a gap.
So every clip is seen once an epoch (but for the ``len % world`` last clips of the shuffled order,
fewer than ``world`` and different ones each epoch), and the batch at a step does not depend on the
number of loader workers or on where the run was resumed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from vidiff.errors import DataError
from vidiff.io import files
from vidiff.io.files import atomic_write
from vidiff.io.frames import parse_size

__all__ = [
    "INDEX",
    "ShardDataset",
    "ShardWriter",
    "encode_clip",
    "expand_braces",
    "is_shard_spec",
    "runs_command",
    "trust_command",
]

logger = logging.getLogger("vidiff.data")

INDEX = "index.json"
FORMAT = "vidiff-shards"
VERSION = 1
SHUFFLE_WINDOW = 1000  # clips: how far the shuffle within a process's range moves a clip
_TAR = re.compile(r"[^/\s]*\.tar\b")  # a shard's name in a path, URL or pipe command
_JSON = re.compile(r"[^/\s]*\.json\b")
_SHARD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.tar")


# ---- writing -----------------------------------------------------------------------------------
TEXT_TOKENS = "text_tokens.npy"  # a sample's member holding its caption's encoder output


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def encode_clip(clip: np.ndarray, meta: dict, text_tokens: Optional[np.ndarray] = None) -> dict:
    """The tar members of one sample: uint8 clip (c f h w) as .npy, its metadata as .json, the
    WebDataset conventions .cls (label) and .txt (caption) where it has them, and the caption's
    encoder output (float16 (n, d)) as text_tokens.npy where given."""
    members = {
        "npy": _npy(np.ascontiguousarray(clip, dtype=np.uint8)),
        "json": json.dumps(meta, ensure_ascii=False).encode(),
    }
    if meta.get("label", -1) >= 0:
        members["cls"] = str(meta["label"]).encode()
    if meta.get("caption"):
        members["txt"] = meta["caption"].encode()
    if text_tokens is not None:
        members[TEXT_TOKENS] = _npy(np.ascontiguousarray(text_tokens, dtype=np.float16))
    return members


class ShardWriter:
    """Writes samples into numbered tar shards of at most ``shard_bytes`` each (a shard holds at
    least one sample), each shard renamed into place when complete, and the index last."""

    def __init__(self, out, shard_bytes: int, prefix: str = "shards"):
        self.out, self.shard_bytes, self.prefix = Path(out), int(shard_bytes), prefix
        self.shards: list[dict] = []
        self.bytes = 0
        self._tar = self._file = self._current = None

    def add(self, key: str, members: dict) -> None:
        size = sum(512 + -(-len(v) // 512) * 512 for v in members.values())
        if self._tar is not None and self._current["clips"] and self._tar.offset + size > self.shard_bytes:
            self._finish()
        if self._tar is None:
            self._open()
        self._current["offsets"].append(self._tar.offset)
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._current["clips"] += 1

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._file = open(self.out / f".{name}.partial", "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self._current = {"name": name, "clips": 0, "offsets": []}

    def _finish(self) -> None:
        cur = self._current
        cur["offsets"].append(self._tar.offset)  # the end of the last sample
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        cur["bytes"] = self._file.tell()
        self._file.close()
        os.replace(self.out / f".{cur['name']}.partial", self.out / cur["name"])
        self.bytes += cur["bytes"]
        self.shards.append(cur)
        self._tar = self._file = self._current = None

    def abort(self) -> None:
        """Stop without an index: the shard being written is closed and removed (finished shards stay)."""
        if self._file is not None:
            self._file.close()
            (self.out / f".{self._current['name']}.partial").unlink(missing_ok=True)
        self._tar = self._file = self._current = None

    def close(self, meta: dict) -> dict:
        """Finish the last shard and write the index (``meta`` plus the shards); returns the index."""
        if self._tar is not None:
            self._finish()
        index = {
            "format": FORMAT,
            "version": VERSION,
            **meta,
            "clips": sum(s["clips"] for s in self.shards),
            "bytes": self.bytes,
            "shards": self.shards,
        }
        atomic_write(self.out / INDEX, json.dumps(index))
        return index


# ---- sources that run a command -----------------------------------------------------------------
# A `pipe:` source is a shell command (WebDataset runs it). vidiff runs one only when the person running
# vidiff named it: on the command line (--data, --set data.source=…), or in Python through trust_command.
# A source read from a file (a run's config.json, a checkpoint's, a Hub snapshot's) is data: never run.
_TRUSTED_COMMANDS: set = set()


def runs_command(spec: str) -> bool:
    """Whether reading the data source ``spec`` runs a shell command (a ``pipe:`` source)."""
    return spec.strip().lower().startswith("pipe:")


def trust_command(spec: str) -> None:
    """Allow the ``pipe:`` source ``spec`` (this exact string) to run its command in this process."""
    if runs_command(spec):
        _TRUSTED_COMMANDS.add(spec)


def check_command(spec: str) -> None:
    """DataError unless ``spec`` runs no command or was trusted (:func:`trust_command`)."""
    if runs_command(spec) and spec not in _TRUSTED_COMMANDS:
        raise DataError(
            f"{spec[:200]}: a pipe: data source runs a shell command, and vidiff runs one only when "
            f"you give it on the command line (--data '…'), never from a config file it reads (a run's "
            f"or a checkpoint's config.json); if you trust this command, pass it with --data (in Python: "
            f"vidiff.data.shards.trust_command(source))"
        )


# ---- locating shards ---------------------------------------------------------------------------
def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar (zero padding kept); ``{x,y}`` lists."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end() :]
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        a, b = r.groups()
        items = [str(i).zfill(len(a)) for i in range(int(a), int(b) + 1)]
    else:
        items = body.split(",")
    return [x for item in items for x in expand_braces(head + item + tail)]


def is_shard_spec(spec: str) -> bool:
    """Whether ``--data spec`` names prepared shards (a folder with an index, an index, tar shards)."""
    if "://" in spec or spec.startswith("pipe:"):
        return True
    if spec.endswith(".json") or _TAR.search(spec):
        return True
    return (Path(spec).expanduser() / INDEX).is_file()


def _locations(spec: str) -> tuple[str, list]:
    """(where the index is, where each shard of the pattern is: None for 'next to the index')."""
    if _TAR.search(spec):
        shards = expand_braces(spec)
        return _TAR.sub(INDEX, shards[0], count=1), shards
    if spec.endswith(".json"):
        return spec, None
    local = Path(spec).expanduser()
    return (str(local / INDEX) if "://" not in spec else spec.rstrip("/") + "/" + INDEX), None


def _read_bytes(location: str) -> bytes:
    if "://" not in location and not location.startswith("pipe:"):
        return Path(location).expanduser().read_bytes()
    try:
        from webdataset import gopen
    except ImportError:
        raise DataError(
            f"{location}: reading shards from URLs and pipes needs webdataset: pip install 'vidiff[shards]'"
        ) from None
    with gopen(location, "rb") as stream:
        return stream.read()


def load_index(spec: str) -> tuple[dict, list[str]]:
    """The index of the shards named by ``spec`` and where each of its shards is."""
    check_command(spec)
    where, pattern = _locations(spec)
    try:
        index = json.loads(_read_bytes(where))
    except DataError:
        raise
    except Exception as e:  # missing file, HTTP error, failed pipe, not JSON
        raise DataError(
            f"{spec}: no readable shard index at {where} ({type(e).__name__}: {e}); prepare the "
            f"shards with `vidiff prepare SRC OUT` (it writes {INDEX} next to them)"
        ) from None
    if index.get("format") != FORMAT or index.get("version", 0) > VERSION:
        raise DataError(f"{where}: not an index of vidiff shards (format {FORMAT} version <= {VERSION})")
    by_name = {s["name"]: s for s in index["shards"]}
    odd = [name for name in by_name if not _SHARD_NAME.fullmatch(str(name))]
    if odd:  # an index names files next to itself only: no folders, no commands
        raise DataError(
            f"{where}: shard name {str(odd[0])[:80]!r} is not a plain file name (like shards-000000.tar); "
            f"this index was not written by `vidiff prepare`: prepare the videos again"
        )
    if pattern is None:
        return index, [_JSON.sub(lambda _, name=s["name"]: name, where, count=1) for s in index["shards"]]
    missing = [p for p in pattern if _TAR.search(p).group(0) not in by_name]
    if missing:
        raise DataError(f"{missing[0]}: not listed in the shard index {where}; give shards prepared together")
    index = dict(index, shards=[by_name[_TAR.search(p).group(0)] for p in pattern])
    return index, pattern


def _parse_members(block: bytes) -> dict:
    """The members of one sample (consecutive tar entries KEY.ext): {ext: bytes}; ValueError if damaged."""
    out, pos = {}, 0
    while pos + 512 <= len(block):
        header = block[pos : pos + 512]
        stored = header[148:156].strip(b" \0")
        # the tar header checksum: the sum of its bytes with the checksum field read as spaces
        if not stored or int(stored, 8) != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise ValueError(f"tar header at byte {pos} of the sample fails its checksum")
        name = header[:100].split(b"\0", 1)[0].decode()
        size = int(header[124:136].strip(b" \0") or b"0", 8)
        if "." not in name or pos + 512 + size > len(block):
            raise ValueError(f"tar member {name!r} does not fit the sample")
        out[name.split(".", 1)[1]] = block[pos + 512 : pos + 512 + size]
        pos += 512 + -(-size // 512) * 512
    if "npy" not in out or "json" not in out:
        raise ValueError(f"the sample has {sorted(out)} but not its .npy clip and .json metadata")
    return out


def _decode(members: dict) -> tuple:
    """(uint8 clip c f h w, label, caption) of a sample's members; ValueError if damaged."""
    try:
        clip = np.load(io.BytesIO(members["npy"]), allow_pickle=False)
        meta = json.loads(members["json"])
    except (ValueError, OSError, EOFError, MemoryError) as e:  # a bad npy header or shape, a short array, bad JSON
        raise ValueError(f"{type(e).__name__}: {e}") from None
    if clip.dtype != np.uint8 or clip.ndim != 4 or not isinstance(meta, dict):
        raise ValueError(
            f"the clip is {clip.dtype} {clip.shape} and its metadata a {type(meta).__name__}, "
            f"not uint8 (c f h w) and an object"
        )
    try:
        return clip, int(meta.get("label", -1)), str(meta.get("caption", ""))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"the metadata's label {meta.get('label')!r} is not a whole number") from None


def _decode_text_tokens(members: dict, text: dict) -> np.ndarray:
    """The caption's stored encoder output, float16 (n, d), as the index's ``text_embeddings`` describes
    it; ValueError if missing or damaged."""
    if TEXT_TOKENS not in members:
        raise ValueError(f"the sample has no {TEXT_TOKENS}, but the index says every sample has one")
    try:
        tokens = np.load(io.BytesIO(members[TEXT_TOKENS]), allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as e:
        raise ValueError(f"{TEXT_TOKENS}: {type(e).__name__}: {e}") from None
    if tokens.dtype != np.float16 or tokens.ndim != 2 or tokens.shape[1] != text["dim"]:
        raise ValueError(f"{TEXT_TOKENS} is {tokens.dtype} {tokens.shape}, not float16 (n, {text['dim']})")
    if not 1 <= tokens.shape[0] <= text["max_length"] or not np.isfinite(tokens).all():
        raise ValueError(f"{TEXT_TOKENS} has {tokens.shape[0]} tokens or values that are not finite")
    return tokens


def _cache_path(location: str, cache_dir: Optional[str]) -> Path:
    root = Path(cache_dir or os.environ.get("VIDIFF_SHARD_CACHE") or files.cache_dir("shards")).expanduser()
    digest = hashlib.sha1(location.encode()).hexdigest()[:16]
    return root / f"{digest}-{_TAR.search(location).group(0)}"


def _fetch(location: str, cache_dir: Optional[str]) -> str:
    """A local path holding shard ``location``: itself, or its copy in the cache (fetched once, whole)."""
    if "://" not in location and not location.startswith("pipe:"):
        return str(Path(location).expanduser())
    path = _cache_path(location, cache_dir)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("fetching shard %s into %s", location, path)
        atomic_write(path, _read_bytes(location))
    return str(path)


# ---- reading -----------------------------------------------------------------------------------
def _text_embeddings(index: dict, spec: str) -> Optional[dict]:
    """The index's record of the text encoder that made the samples' text_tokens (None: no tokens)."""
    text = index.get("text_embeddings")
    if text is None:
        return None
    keys = ("encoder", "fingerprint", "max_length", "dim")
    if (
        not isinstance(text, dict)
        or any(k not in text for k in keys)
        or not all(isinstance(text[k], int) for k in ("max_length", "dim"))
    ):
        raise DataError(f"{spec}: the index's text_embeddings is not {{{', '.join(keys)}}}; prepare the shards again")
    return text


class ShardDataset(Dataset):
    """Clips of prepared shards (see the module docstring), read by random access.

    Items are ``{"video": float32 (c f h w) in [-1, 1], "label": int, "caption": str}`` like the other
    datasets; ``flip`` flips clips left-right at random (drawn from the generator of ``item``).
    ``frames`` and ``size`` must be those the shards were prepared at.
    Shards prepared with a text encoder (``text_embeddings``: its identity) also give ``"text_tokens"``,
    the caption's encoder output, float16 (n, d).
    """

    items_are_cheap = True  # no decoding (vidiff.train.loader.num_workers)
    max_open_shards = 64  # open files kept per process; the least recently read is closed beyond that

    def __init__(
        self,
        spec: str,
        frames: int,
        size,
        flip: bool = False,
        cache_dir: Optional[str] = None,
        window: int = SHUFFLE_WINDOW,
        skip_bad_files: bool = False,
    ):
        index, self.locations = load_index(spec)
        self.spec, self.flip, self.cache_dir, self.window = spec, flip, cache_dir, int(window)
        self.skip_bad_files, self.skipped_bad = skip_bad_files, 0
        have = (index["frames"], *index["size"])
        if (frames, *parse_size(size)) != have:
            raise DataError(
                f"{spec}: the shards hold clips of {have[0]} frames of {have[1]}×{have[2]}, not "
                f"{frames} of {parse_size(size)[0]}×{parse_size(size)[1]}; train with data.frames="
                f"{have[0]} data.size={have[1]}, or prepare the videos again at this size"
            )
        self.fps = index.get("fps")
        self.classes = tuple(index.get("classes", ()))
        self.counts = np.array([s["clips"] for s in index["shards"]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.offsets = [s["offsets"] for s in index["shards"]]
        if not self.starts[-1]:
            raise DataError(f"{spec}: the shards hold no clips")
        # the text conditioning checks captions: None when some clips have one (not listed here)
        self.captions = None if index.get("captioned", 0) else ()
        self.text_embeddings = _text_embeddings(index, spec)
        self._fds: OrderedDict = OrderedDict()  # shard -> file descriptor, least recently read first

    def __getstate__(self):  # loader workers open their own files
        return {**self.__dict__, "_fds": OrderedDict()}

    def close(self) -> None:
        """Close the open shard files (reading again reopens them)."""
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __del__(self):
        if getattr(self, "_fds", None):
            self.close()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, sample within it) of clip ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip {index} out of range for {len(self)} clips in {self.spec}")
        index %= len(self)
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, index - int(self.starts[shard])

    def raw(self, index: int) -> dict:
        """The tar members of clip ``index``: {"npy": bytes, "json": bytes, ...} (ValueError if damaged)."""
        return _parse_members(self._block(index))

    def _block(self, index: int) -> bytes:
        shard, j = self.locate(index)
        fd = self._shard_fd(shard)
        start, end = self.offsets[shard][j], self.offsets[shard][j + 1]
        block = os.pread(fd, end - start, start)
        if len(block) != end - start:
            raise DataError(
                f"{self.locations[shard]}: the shard is shorter than its index says; it was truncated "
                f"or replaced: prepare it again"
            )
        return block

    def _shard_fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is not None:
            self._fds.move_to_end(shard)
            return fd
        path = _fetch(self.locations[shard], self.cache_dir)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise DataError(f"{self.locations[shard]}: cannot open the shard ({e})") from None
        self._fds[shard] = fd
        while len(self._fds) > self.max_open_shards:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def __getitem__(self, index: int) -> dict:
        return self.item(index, None)

    def item(self, index: int, generator: Optional[torch.Generator]) -> dict:
        """Clip ``index``; a damaged one raises DataError, or with ``skip_bad_files`` is replaced by the next."""
        self.locate(index)  # IndexError out of range
        coin = float(torch.rand((), generator=generator))  # drawn either way: the generator's use is fixed
        for attempt in range(len(self)):
            try:
                clip, label, caption, tokens = self._clip((index + attempt) % len(self))
                break
            except DataError as e:
                if not self.skip_bad_files:
                    raise
                self.skipped_bad += 1
                logger.warning(
                    "skipping a damaged clip (%d so far in this process), using the next one: %s", self.skipped_bad, e
                )
        else:
            raise DataError(f"{self.spec}: every clip of the shards is damaged; prepare the videos again")
        if self.flip and coin < 0.5:
            clip = clip[..., ::-1]
        # as to_model_video, bit for bit, in numpy: one thread (torch's threads cost more than they save here)
        video = torch.from_numpy(np.subtract(np.divide(clip, np.float32(127.5), dtype=np.float32), np.float32(1)))
        item = {"video": video, "label": label, "caption": caption}
        if tokens is not None:
            item["text_tokens"] = torch.from_numpy(tokens)
        return item

    def _clip(self, index: int) -> tuple:
        """(clip, label, caption, stored text tokens or None) of clip ``index``; DataError if damaged."""
        block = self._block(index)
        try:
            members = _parse_members(block)
            tokens = _decode_text_tokens(members, self.text_embeddings) if self.text_embeddings else None
            return (*_decode(members), tokens)
        except ValueError as e:
            shard, j = self.locate(index)
            key = block[:100].split(b"\0", 1)[0].decode(errors="replace").split(".", 1)[0]
            raise DataError(
                f"{self.locations[shard]}: sample {key!r} (number {j} in the shard) is damaged ({e}); "
                f"prepare the shards again, or pass --skip-bad-files to skip damaged clips"
            ) from None

    def epoch_length(self, world: int) -> int:
        """Clips each of ``world`` processes takes in an epoch."""
        n = len(self) // world
        if n < 1:
            raise DataError(f"{self.spec}: {len(self)} clips cannot be split across {world} processes")
        return n

    def epoch_order(self, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """The clips process ``rank`` of ``world`` takes in ``epoch``, in order (see the module docstring)."""
        rng = np.random.default_rng([seed, epoch, 0x5EED])
        shards = rng.permutation(len(self.counts))
        order = np.concatenate([np.arange(self.starts[s], self.starts[s + 1]) for s in shards])
        n = self.epoch_length(world)
        mine = order[rank * n : (rank + 1) * n]
        local = np.random.default_rng([seed, epoch, rank, world])
        jitter = np.arange(n) + self.window * local.random(n)
        return mine[np.argsort(jitter, kind="stable")]
