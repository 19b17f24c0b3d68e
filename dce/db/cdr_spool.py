"""A local spool for CDRs the database could not take before shutdown, replayed at the next start.

The batching writer never drops a record while it runs; this closes the last gap (a stop while the database is
down). One JSON object per line, appended and fsynced; replay reads it, hands every record back to the writer
and removes the file. Writes are idempotent on call_id, so a crash mid-replay duplicates nothing.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from dce.billing.cdr import CallDetailRecord
from dce.db.cdr_repository import cdr_to_row, row_to_cdr

_TIME_FIELDS = ("invite_at", "ring_at", "answer_at", "end_at")


def spool(path: Path, cdrs: list[CallDetailRecord]) -> None:
    """Append ``cdrs`` to the spool file durably."""
    if not cdrs:
        return
    lines = []
    for cdr in cdrs:
        row = cdr_to_row(cdr)
        for name in _TIME_FIELDS:
            if row[name] is not None:
                row[name] = row[name].isoformat()
        lines.append(json.dumps(row, sort_keys=True))
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def take(path: Path) -> list[CallDetailRecord]:
    """Read every spooled CDR and remove the file (lines that do not parse are kept aside, not lost)."""
    if not path.exists():
        return []
    records: list[CallDetailRecord] = []
    bad: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            for name in _TIME_FIELDS:
                if row.get(name) is not None:
                    row[name] = datetime.fromisoformat(row[name])
            records.append(row_to_cdr(row))
        except (ValueError, KeyError, TypeError):
            bad.append(line)
    if bad:
        with path.with_suffix(path.suffix + ".bad").open("a", encoding="utf-8") as handle:
            handle.write("\n".join(bad) + "\n")
    path.unlink()
    return records
