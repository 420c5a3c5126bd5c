"""Advisory file locks (`fcntl.flock`) for work that several processes share through one folder: two
`make leaderboard` runs on the same output split its stages between them instead of both computing
(and overwriting) the same run. The kernel releases a lock when its holder exits, so a killed process
leaves no stale lock behind."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def lock_file(target: str | os.PathLike) -> Path:
    """The lock file that guards the folder or file `target` while it is built: `.<name>.lock` beside it."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


@contextmanager
def exclusive(path: str | os.PathLike, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on the file `path` (created, with its folder, if missing) for the block.
    Yields True once held; with `wait=False` yields False at once, holding nothing, when another
    holder has it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock
