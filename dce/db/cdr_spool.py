"""A durable local spool for records the database has not taken yet (CDRs, bids), read back when it can.

Records land here when the writer's memory queue is full (spilled) and when the exchange stops with records
unwritten; both are read back by the writer, chunk by chunk, at start and whenever its queue has room. One ASCII
JSON line per record (:mod:`dce.db.record_codec`: every field of the record type), appended and fsynced before
anyone says "spooled". Reading back renames the file to ``<name>.replay`` (new records keep appending to the
file itself) and removes it only when the writer says every record read from it is stored; writes are idempotent
on the record's key, so a crash mid-replay duplicates nothing. A line that does not parse is kept in
``<name>.bad``, not lost.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Generic, TypeVar

from dce.db.record_codec import Codec

T = TypeVar("T")


class Spool(Generic[T]):
    """The spool file at ``path`` for records of ``codec``'s type."""

    def __init__(self, path: Path | str, codec: Codec[T]) -> None:
        self.path = Path(path)
        self.codec = codec
        self.replay_path = self.path.with_name(self.path.name + ".replay")
        self.bad_path = self.path.with_name(self.path.name + ".bad")
        self._offset = 0  # bytes of the replay file read so far
        self._lock = threading.Lock()  # appends run in a worker thread; a rename must not cut one in two

    def append(self, records: Sequence[T]) -> None:
        """Append ``records`` and fsync; when this returns they are on disk. Raises OSError."""
        if not records:
            return
        data = "".join(self.codec.dumps(record) + "\n" for record in records).encode("ascii")
        with self._lock:
            self._append(data)

    def _append(self, data: bytes) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new directory entry is durable too
            _fsync_directory(self.path.parent)

    def has_records(self) -> bool:
        """Whether a spool or replay file exists."""
        return self.path.exists() or self.replay_path.exists()

    def read(self, limit: int) -> tuple[list[T], bool]:
        """Up to ``limit`` records of the file being replayed (starting one if none is); ``True`` once it is
        read to the end. Call :meth:`finish_replay` when every record read is stored."""
        if not self.replay_path.exists():
            with self._lock:
                if not self.path.exists():
                    return [], True
                os.replace(self.path, self.replay_path)
            self._offset = 0
        records: list[T] = []
        bad: list[bytes] = []
        with self.replay_path.open("rb") as handle:
            handle.seek(self._offset)
            while len(records) < limit:
                line = handle.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):  # a torn last line (a crash mid-append): keep it aside
                    bad.append(line + b"\n")
                    continue
                if line.strip():
                    try:
                        records.append(self.codec.loads(line.decode("ascii")))
                    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
                        bad.append(line)
            self._offset = handle.tell()
            exhausted = not handle.readline()
        if bad:
            with self.bad_path.open("ab") as handle:
                handle.write(b"".join(bad))
                handle.flush()
                os.fsync(handle.fileno())
        return records, exhausted

    def finish_replay(self) -> None:
        """Every record read from the replay file is stored: remove it."""
        self.replay_path.unlink(missing_ok=True)
        self._offset = 0

    def take(self) -> list[T]:
        """Every spooled record, removing the files (for tools and tests; the writer reads chunk by chunk)."""
        records: list[T] = []
        while self.has_records():
            chunk, exhausted = self.read(1 << 30)
            records.extend(chunk)
            if exhausted:
                self.finish_replay()
        return records


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
