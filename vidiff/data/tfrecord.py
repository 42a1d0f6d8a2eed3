"""TFRecord files and the ``tf.train.Example`` / ``tf.train.SequenceExample`` protobufs in them, read
without TensorFlow (how BAIR robot pushing is published).

A TFRecord file is a sequence of records, each framed as
``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`` (little endian),
where ``masked_crc32c(x) = rotate_right(crc32c(x), 15) + 0xA282EAD8`` (mod 2^32). Both checksums are
checked: a damaged record is one :class:`DataError` naming the file and the record.

An Example holds ``Features features = 1``; a SequenceExample holds ``Features context = 1`` (and
``FeatureLists feature_lists = 2``, not read here): the same message in the same field, so one reader
serves both. ``Features`` is ``map<string, Feature> feature = 1``; a ``Feature`` is one of
``BytesList bytes_list = 1``, ``FloatList float_list = 2``, ``Int64List int64_list = 3``, each a
``repeated value = 1`` (numbers packed or not). Protobuf's wire format: every field is a varint key
``(number << 3) | wire type`` followed by a varint (type 0), 8 bytes (1), a varint length and that many
bytes (2), or 4 bytes (5).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from vidiff.errors import DataError

__all__ = ["masked_crc32c", "parse_features", "read_records"]

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum of ``data``: CRC-32C, rotated right by 15 bits, plus a constant."""
    import google_crc32c

    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path) -> Iterator[bytes]:
    """The records of TFRecord file ``path``, each checked against both its checksums."""
    path = Path(path)
    with open(path, "rb") as f:
        number = 0
        while True:
            head = f.read(12)
            if not head:
                return
            where = f"{path}: record {number}"
            if len(head) < 12:
                raise DataError(f"{where}: the file ends inside a record's header; it is truncated: download it again")
            length, length_crc = struct.unpack("<QI", head)
            if masked_crc32c(head[:8]) != length_crc:
                raise DataError(
                    f"{where}: the record's length fails its checksum; the file is damaged or not a "
                    f"TFRecord file: download it again"
                )
            data, tail = f.read(length), f.read(4)
            if len(data) < length or len(tail) < 4:
                raise DataError(f"{where}: the file ends inside the record; it is truncated: download it again")
            if masked_crc32c(data) != struct.unpack("<I", tail)[0]:
                raise DataError(f"{where}: the record fails its checksum; the file is damaged: download it again")
            yield data
            number += 1


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("a varint runs past its message")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of each field of a message: an int, or a memoryview of its bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"wire type {wire} (field {number}) is not used by tf.train.Example")
        if pos > len(buf):
            raise ValueError(f"field {number} runs past its message")
        yield number, wire, value


def _values(feature: memoryview) -> list:
    """The values of one Feature: bytes, floats or ints."""
    for kind, _, holder in _fields(feature):
        out: list = []
        for number, wire, value in _fields(holder):
            if number != 1:
                continue
            if kind == 1:  # BytesList
                out.append(bytes(value))
            elif kind == 2:  # FloatList: packed (wire 2) or one float32 each (wire 5)
                out.extend(np.frombuffer(value, dtype="<f4").tolist())
            elif kind == 3 and wire == 2:  # Int64List, packed varints
                pos = 0
                while pos < len(value):
                    v, pos = _varint(value, pos)
                    out.append(v - (1 << 64) if v >> 63 else v)
            elif kind == 3:
                out.append(value - (1 << 64) if value >> 63 else value)
        return out
    return []


def parse_features(record: bytes) -> dict:
    """{name: list of values} of the features of an Example, or of a SequenceExample's context.
    ValueError if the record is not such a message."""
    out = {}
    for number, wire, features in _fields(memoryview(record)):
        if number != 1 or wire != 2:
            continue
        for entry_number, _, entry in _fields(features):
            if entry_number != 1:
                continue
            key, value = None, memoryview(b"")
            for n, _, v in _fields(entry):
                if n == 1:
                    key = bytes(v).decode()
                elif n == 2:
                    value = v
            if key is not None:
                out[key] = _values(value)
    return out
