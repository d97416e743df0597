"""Read an offline wandb run's `run-*.wandb` file back with wandb's own record definitions.

The file is a LevelDB-style log (what `wandb sync` replays): a 7-byte header, then 32 KiB blocks of chunks,
each with a 7-byte header (CRC, length, type: full, first, middle, last); the chunks of one record join
into a `wandb_internal.Record` protobuf, which `wandb.proto` parses.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024
FILE_HEADER = 7  # ":W&B", a magic number and the format version
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    """Every record of the file, in order, as `wandb.proto.wandb_internal_pb2.Record` messages."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    records, pending, pos = [], b"", FILE_HEADER
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if length == 0 and kind == 0:  # zero padding up to the end of the block
            pos += left
            continue
        pending += data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_run(run_dir: Path) -> Path:
    """The one offline run folder wandb wrote under `run_dir/wandb`."""
    (folder,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    return folder


def records_of(run_dir: Path, kind: str) -> list:
    """The records of one kind (`"artifact"`, `"files"`, `"exit"`, `"config"`, …), each as its payload."""
    (log,) = offline_run(run_dir).glob("run-*.wandb")
    return [getattr(r, kind) for r in read_records(log) if r.WhichOneof("record_type") == kind]
