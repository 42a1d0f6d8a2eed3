"""BAIR robot pushing (Ebert et al. 2017, "softmotion30_44k"), as published: TFRecord files
``softmotion30_44k/{train,test}/traj_*_to_*.tfrecords`` (43,264 training and 256 test trajectories).

Each record is a tf.train.Example (or SequenceExample) whose (context) features are, for each time step
t in 0..29: ``{t}/image_aux1/encoded`` and ``{t}/image_main/encoded`` (the two cameras' 64×64 RGB
frames as raw uint8 bytes, despite the name), ``{t}/action`` (4 floats) and ``{t}/endeffector_pos``
(3 floats). The video-prediction literature trains and evaluates on ``image_aux1`` (``camera="aux1"``).
A trajectory is one video of 30 frames; it gives back-to-back clips like any other video.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidiff.data.listing import Listing, Video, frames_to_clips
from vidiff.data.tfrecord import parse_features, read_records
from vidiff.errors import DataError

__all__ = ["CAMERAS", "FPS", "SIZE", "STEPS", "listing", "read_trajectory"]

STEPS = 30  # frames of a trajectory
SIZE = 64  # the published frames are 64×64 RGB
FPS = 10.0  # the robot's control rate; the frames carry no timing of their own
CAMERAS = ("aux1", "main")
SPLIT_FOLDERS = ("train", "test")


def read_trajectory(record: bytes, camera: str = "aux1") -> np.ndarray:
    """The frames of one trajectory record: uint8 (30, 64, 64, 3). ValueError if it is not one."""
    features = parse_features(record)
    frames = []
    for t in range(STEPS):
        values = features.get(f"{t}/image_{camera}/encoded")
        if not values or len(values[0]) != SIZE * SIZE * 3:
            got = "missing" if not values else f"{len(values[0])} bytes"
            raise ValueError(f"feature {t}/image_{camera}/encoded is {got}, not {SIZE}×{SIZE}×3 raw bytes")
        frames.append(np.frombuffer(values[0], dtype=np.uint8).reshape(SIZE, SIZE, 3))
    return np.stack(frames)


@dataclass(frozen=True)
class BairFile:
    """One TFRecord file of trajectories: each record a video named ``FILE#record``."""

    path: str
    camera: str = "aux1"

    def videos(self, frames: int, size) -> list:
        out = []
        for i, record in enumerate(read_records(self.path)):
            try:
                video = read_trajectory(record, self.camera)
            except ValueError as e:
                raise DataError(
                    f"{self.path}: record {i} is not a BAIR trajectory ({e}); download the file again"
                ) from None
            out.append(Video(f"{Path(self.path).name}#{i}", -1, "", FPS, frames_to_clips(video, frames, size)))
        return out


def _first_number(path: Path) -> tuple:
    numbers = re.findall(r"\d+", path.name)
    return (int(numbers[0]) if numbers else -1, path.name)


def split_folder(src, split: str) -> Path:
    """Where the ``split`` TFRecords are: SRC/softmotion30_44k/SPLIT, SRC/SPLIT or SRC itself."""
    src = Path(src)
    for folder in (src / "softmotion30_44k" / split, src / split, src):
        if folder.is_dir() and any(folder.glob("*.tfrecords")):
            return folder
    raise DataError(
        f"{src}: no {split} TFRecords (softmotion30_44k/{split}/*.tfrecords); download BAIR robot pushing "
        f"(bair_robot_pushing_dataset_v0.tar) and give the folder it unpacks into"
    )


def listing(src, split: str = "train", camera: str = "aux1") -> Listing:
    """The trajectories of ``split`` (train or test) of BAIR under ``src``, files in the order of the
    trajectory numbers in their names."""
    if split not in SPLIT_FOLDERS:
        raise DataError(f"--split {split}: BAIR has the splits {', '.join(SPLIT_FOLDERS)}")
    if camera not in CAMERAS:
        raise DataError(f"--camera {camera}: BAIR has the cameras {', '.join(CAMERAS)}")
    files = sorted(split_folder(src, split).glob("*.tfrecords"), key=_first_number)
    return Listing(
        [BairFile(str(f), camera) for f in files],
        meta={"dataset": "bair", "split": split, "camera": camera, "fps": FPS},
    )
