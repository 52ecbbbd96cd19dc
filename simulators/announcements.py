"""A corporate-action announcements feed for development and tests: a JSON-lines file, one
announcement per line (the fields of :class:`domain.ports.Announcements`). Implements that port.

``add`` appends an announcement (tests, or an operator simulating one); ``announced`` returns
the records whose ex-date or payable date falls in the window, as written (Sherwood validates
them; a malformed line is returned as it is, for the validation to refuse visibly).
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from domain.ports import Announcements

MAX_FILE_BYTES = 16 * 1024 * 1024


class FileAnnouncements:
    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, record: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True, default=str) + "\n")

    async def announced(self, since: date, until: date) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        if self.path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"{self.path} is larger than {MAX_FILE_BYTES} bytes")
        out: list[dict[str, object]] = []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line, parse_float=Decimal)  # numbers stay exact
            except ValueError:
                out.append({"malformed": line[:200]})
                continue
            if not isinstance(record, dict):
                out.append({"malformed": line[:200]})
                continue
            days = {str(record.get("ex_date")), str(record.get("payable_date"))}
            if any(since.isoformat() <= d <= until.isoformat() for d in days if len(d) == 10):
                out.append(record)
        return out


if TYPE_CHECKING:  # mypy checks that the simulator satisfies the port
    _is_a_feed: type[Announcements] = FileAnnouncements
