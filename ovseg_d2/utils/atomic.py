"""Atomic file writes: the data goes to a hidden temporary sibling that is then renamed over the
target, so a reader (or a resumed run) sees the whole file or none, and the temporary name matches
no glob of a loader (`*.jpg`, `*.pt`, `*.json`)."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_bytes_atomic(path, json.dumps(data, indent=2).encode())


def torch_save_atomic(obj: object, path: str | os.PathLike) -> Path:
    """`torch.save(obj, path)`, atomically (the serialised bytes are built in memory first)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(path, buffer.getvalue())
