"""Reading video files by presentation time: a file's timing, and the frames shown at given times.

A video is read as a row of *slots*: the instants ``t_k = k / fps`` after its first frame, at a rate
``fps`` (the file's nominal frame rate unless the caller gives one). Slot ``k`` holds the frame shown at
``t_k``: the last frame whose presentation time (``pts * time_base``, relative to the first frame's) is
not after ``t_k``. So a frame held on screen fills several slots (GIF encoders, Pillow's included,
store a repeated frame once with a longer delay), variable-frame-rate video (phones) is evened out to a
constant rate, and a constant-frame-rate file read at its nominal rate gives slot ``k`` = frame ``k``.

A frame counts as shown at ``t`` when it starts less than half a frame after ``t`` (half a period at the
nominal rate or at ``fps``, whichever is shorter), because containers round timestamps (Matroska to
milliseconds, GIF to centiseconds) and a frame a rounding error late must not lose its slot.

A file's length in frames is the number of slots that lie inside it, from its first frame to the end of
its last (the last frame's pts plus its duration, or plus one period at the nominal rate where the
duration is unknown). Probing reads the first frame and the stream's metadata, and demuxes the packets
(no decoding) only where the metadata lacks the frame count or duration, and for GIF, whose nominal rate
comes from its frame delays.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, NamedTuple, Optional, Union

import av
import numpy as np

from vidiff.errors import DataError, ShortVideoError

SKIP_ADVICE = "pass --skip-bad-files (skip_bad_files=True in Python)"
ADVICE = f"re-encode it (e.g. `ffmpeg -i IN -pix_fmt yuv420p OUT.mp4`), remove it, or {SKIP_ADVICE}"


@dataclass(frozen=True)
class VideoInfo:
    """What the index knows about one video file; times are in seconds."""

    path: str
    num_frames: int  # slots at `fps` inside the file: what a clip of the file is cut from
    height: int
    width: int
    fps: Fraction  # slots per second: the rate clips are sampled at
    rate: Fraction  # the file's nominal frame rate
    start_pts: int  # the first frame's pts, time 0 of the slots
    time_base: Optional[Fraction]  # None: no timestamps; frames are placed in decode order at `rate`

    @property
    def margin(self) -> Fraction:
        return frame_margin(self.rate, self.fps)


def frame_margin(rate: Fraction, fps: Fraction) -> Fraction:
    """How late a frame may start and still count as shown at a slot (see the module docstring)."""
    return min(1 / rate, 1 / fps) / 2


class _NeedSequential(Exception):
    """The seek path could not place the frames; decode from the start instead."""


class _Timing(NamedTuple):
    count: int  # frames (non-empty packets) in the file
    end: Optional[Fraction]  # end of the last frame in stream ticks; None: no timestamps
    rate: Optional[Fraction]  # nominal frame rate


def as_fps(fps: Union[float, Fraction, None]) -> Optional[Fraction]:
    """A user's frame rate as an exact fraction (29.97 -> 2997/100), checked; None stays None."""
    if fps is None:
        return None
    value = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1_000_000)
    if not value > 0:
        raise ValueError(f"fps must be a positive frame rate or None, got {fps!r}")
    return value


def count_slots(span: Fraction, fps: Fraction, margin: Fraction) -> int:
    """Slots ``k / fps`` that lie inside ``span`` seconds, not within ``margin`` of its end."""
    return max(0, math.ceil((span - margin) * fps))


def _rgb(frame: av.VideoFrame, path: str, hw: tuple[int, int] | None = None) -> np.ndarray:
    try:
        if hw is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", height=hw[0], width=hw[1], interpolation="AREA")
    except (av.FFmpegError, ValueError) as e:
        raise DataError(f"{path}: cannot convert pixel format {frame.format.name!r} to RGB ({e}); {ADVICE}") from e


def _rate_from_delays(delays: list[int], time_base: Fraction) -> Optional[Fraction]:
    """The frame rate of frames lasting ``delays`` ticks, where a long delay is a held frame.

    The shortest delay is the frame period up to rounding; the rate counts each delay as the nearest
    whole number of such periods. Taking 1 / the shortest delay alone would drift: an 8 fps GIF stores
    delays of 12 and 13 centiseconds.
    """
    delays = [d for d in delays if d and d > 0]
    if not delays or not time_base:
        return None
    shortest = min(delays)
    periods = sum(max(1, round(d / shortest)) for d in delays)
    return periods / (sum(delays) * time_base)


def _metadata_timing(stream) -> Optional[_Timing]:
    """Timing from the stream header alone, where it has the frame count and duration (mp4, mov, avi)."""
    if stream.codec_context.name == "gif" or stream.frames <= 0 or not stream.duration:
        return None
    rate = stream.guessed_rate or stream.average_rate
    if not rate or not stream.time_base or stream.start_time is None:
        return None
    return _Timing(stream.frames, Fraction(stream.start_time + stream.duration), Fraction(rate))


def _packet_timing(container, stream, fps: Optional[Fraction]) -> _Timing:
    """Timing from the demuxed packets (not decoded): their count, timestamps and durations."""
    packets = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.size > 0]
    time_base = Fraction(stream.time_base) if stream.time_base else None
    nominal = stream.guessed_rate or stream.average_rate
    delays_rate = _rate_from_delays([d for _, d in packets], time_base)
    rate = delays_rate if stream.codec_context.name == "gif" else None
    rate = rate or (Fraction(nominal) if nominal else None) or delays_rate or fps
    if not packets or time_base is None or any(pts is None for pts, _ in packets):
        return _Timing(len(packets), None, rate)
    pts, duration = max(packets)  # the frame shown last
    if not duration and rate:
        duration = 1 / (rate * time_base)
    return _Timing(len(packets), Fraction(pts + duration), rate)


def probe_video(path: str | os.PathLike, fps: Union[float, Fraction, None] = None) -> VideoInfo:
    """Index one video file: its length in slots at ``fps`` (default: its nominal rate), size and
    timing; decodes its first frame as a check. Raises :class:`DataError` naming the file."""
    path, fps = str(path), as_fps(fps)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DataError(f"{path}: has no video stream; is it really a video? Remove it or {ADVICE}")
            stream = container.streams.video[0]
            timing = _metadata_timing(stream)
            if timing is None:
                timing = _packet_timing(container, stream, fps)
                if timing.count > 0:
                    container.seek(0)
            first = next(iter(container.decode(stream)), None) if timing.count > 0 else None
            if first is None:
                raise DataError(f"{path}: the video has zero frames; remove it or {SKIP_ADVICE}")
            _rgb(first, path)
            return _info(path, stream, first, timing, fps)
    except DataError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(
            f"{path}: cannot be read as a video ({type(e).__name__}: {e}); the file is corrupt, truncated or "
            f"not a video; {ADVICE}"
        ) from e


def _info(path: str, stream, first: av.VideoFrame, timing: _Timing, fps: Optional[Fraction]) -> VideoInfo:
    rate = timing.rate or fps
    if rate is None:
        raise DataError(f"{path}: the file gives no frame rate; re-encode it with one, or give the dataset an fps")
    fps = fps or rate
    time_base = Fraction(stream.time_base) if timing.end is not None and first.pts is not None else None
    span = (timing.end - first.pts) * time_base if time_base is not None else timing.count / rate  # seconds
    num_frames = count_slots(span, fps, frame_margin(rate, fps))
    return VideoInfo(path, num_frames, first.height, first.width, fps, rate, first.pts or 0, time_base)


# ---------------------------------------------------------------- decoding


TimedFrames = Iterator[tuple[Fraction, av.VideoFrame]]  # (seconds after the first frame, frame)


def _frame_end(time: Fraction, frame: av.VideoFrame, rate: Fraction) -> Fraction:
    duration = getattr(frame, "duration", None)  # PyAV < 13 has no frame durations
    if duration and frame.time_base:
        return time + duration * Fraction(frame.time_base)
    return time + 1 / rate


def _pick(
    timed: TimedFrames, targets: list[Fraction], margin: Fraction, rate: Fraction, convert: Callable
) -> tuple[list[np.ndarray], Optional[Fraction]]:
    """The frame shown at each of the sorted ``targets`` (seconds), converted by ``convert``.

    Returns the picked frames and None; or, when the frames ran out before the last target, fewer
    frames and where the decoded frames end (seconds). Raises :class:`_NeedSequential` when the first
    frame comes after the first target (a seek that landed too late).
    """
    picked: list[np.ndarray] = []
    shown, shown_time, shown_rgb = None, Fraction(0), None
    for time, frame in timed:
        while len(picked) < len(targets) and time >= targets[len(picked)] + margin:
            if shown is None:
                raise _NeedSequential
            shown_rgb = convert(shown) if shown_rgb is None else shown_rgb  # a held frame is converted once
            picked.append(shown_rgb)
        if len(picked) == len(targets):
            return picked, None
        shown, shown_time, shown_rgb = frame, time, None
    if shown is None:
        return picked, Fraction(0)
    end = _frame_end(shown_time, shown, rate)
    while len(picked) < len(targets) and targets[len(picked)] < end - margin:  # the last frame, held to its end
        shown_rgb = convert(shown) if shown_rgb is None else shown_rgb
        picked.append(shown_rgb)
    return picked, None if len(picked) == len(targets) else end


def _timed_after_seek(container, stream, info: VideoInfo) -> TimedFrames:
    previous = None
    for frame in container.decode(stream):
        if frame.pts is None:
            raise _NeedSequential
        time = (frame.pts - info.start_pts) * info.time_base
        if previous is not None and time < previous:
            raise _NeedSequential  # timestamps out of order: only the sequential path copes
        previous = time
        yield time, frame


def _timed_from_start(container, stream, info: VideoInfo) -> TimedFrames:
    origin, time = None, None
    for frame in container.decode(stream):
        if info.time_base is None or frame.pts is None:
            time = Fraction(0) if time is None else time + 1 / info.rate  # decode order at the nominal rate
        else:
            origin = frame.pts if origin is None else origin
            time = (frame.pts - origin) * info.time_base
        yield time, frame


def _video_stream(container):
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _decode_after_seek(info: VideoInfo, targets: list[Fraction], convert: Callable) -> Optional[list[np.ndarray]]:
    """The frames at ``targets``, decoded from the keyframe before the first; None where that fails."""
    with av.open(info.path) as container:
        stream = _video_stream(container)
        try:
            ts = info.start_pts + math.floor(targets[0] / info.time_base)
            container.seek(ts, backward=True, any_frame=False, stream=stream)
            picked, _ = _pick(_timed_after_seek(container, stream, info), targets, info.margin, info.rate, convert)
        except (_NeedSequential, av.FFmpegError):
            return None
    return picked if len(picked) == len(targets) else None  # ran out: the sequential path reports it


def _decode_from_start(info: VideoInfo, indices: list[int], targets: list[Fraction], convert: Callable) -> list:
    with av.open(info.path) as container:
        stream = _video_stream(container)
        # never _NeedSequential: the first frame is time 0, not after any target
        picked, end = _pick(_timed_from_start(container, stream, info), targets, info.margin, info.rate, convert)
    if len(picked) < len(targets):
        frames = count_slots(end, info.fps, info.margin)
        raise ShortVideoError(
            f"{info.path}: decoded only {frames} frames ({float(end):.3f} s at {float(info.fps):g} fps) but the "
            f"index says {info.num_frames} and frame {indices[-1]} was needed; the file is truncated or corrupt; "
            f"{ADVICE}",
            frames_decoded=frames,
        )
    return picked


def decode_frames(
    info: VideoInfo,
    indices: list[int],
    hw: tuple[int, int] | None = None,
    seek: bool = True,
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> np.ndarray:
    """The frames shown at the sorted slot ``indices`` of a video (slot k at k / info.fps seconds after
    its first frame), as uint8 RGB (f, h, w, c).

    With ``seek`` (and timestamps) decoding starts at the keyframe before ``indices[0]``; otherwise, or
    where the seek cannot place the frames, at the start of the file. ``hw`` resizes the frames (area
    filter) while converting. ``transform`` maps each RGB frame (h, w, c) as soon as it is decoded, so
    only its results are held (the frames are then its outputs, stacked). Raises :class:`DataError`
    when the file cannot be decoded, and :class:`ShortVideoError` when it ends before the last slot needed.
    """
    targets = [Fraction(i) / info.fps for i in indices]
    convert = lambda frame: _rgb(frame, info.path, hw) if transform is None else transform(_rgb(frame, info.path, hw))
    try:
        picked = None
        if seek and info.time_base is not None and indices[0] > 0:
            picked = _decode_after_seek(info, targets, convert)
        if picked is None:
            picked = _decode_from_start(info, indices, targets, convert)
    except DataError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"{info.path}: decoding failed ({type(e).__name__}: {e}); the file is corrupt; {ADVICE}") from e
    return np.stack(picked)  # (f, h, w, c)
