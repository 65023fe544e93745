"""Re-verify a JSON Lines audit export or archive, with no database and no Django settings.

    python -m fleet.audit.verify_export FILE.jsonl [MORE.jsonl.gz ...] [--expect-head HASH] [--allow-gaps]

Every event's hash is recomputed from its content and checked against the `hash` field, and every event's
`prev_hash` against the hash of the event before it, across files given in chain order (an archive, then the
next archive, then an export of what is still in the database). A chain that starts at #1 must start from the
genesis hash (64 zeros). An archive ends with a trailer line `{"archive": {...}}` naming the hash the chain
continues from; it is checked against the archive's last event. `--expect-head` compares the last hash with
one published earlier (from `manage.py audit_verify` or the PDF report). `--allow-gaps` accepts a filtered
export: a jump in sequence numbers is counted, and links are checked only between neighbouring events.

Exit status: 0 verified, 1 a break was found (the first one is named), 2 the file cannot be read.
Only the standard library and `fleet/audit/chain.py` are used.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from fleet.audit.chain import ChainCheck, check_chain


class ExportFileError(Exception):
    """A line that is not an event (bad JSON, misplaced trailer)."""


@dataclass
class Position:
    file: str = ""
    line: int = 0
    trailers: list[tuple[str, int, dict[str, Any], int, str]] = field(default_factory=list)


def _open(path: str) -> IO[str]:
    if path == "-":
        return sys.stdin
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")  # closed by the caller


def read_events(paths: Sequence[str], position: Position, state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the events of the files in order; remember where each came from and the archive trailers."""
    for path in paths:
        handle = _open(path)
        try:
            trailer_seen = False
            for number, text in enumerate(handle, start=1):
                position.file, position.line = path, number
                if not text.strip():
                    continue
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ExportFileError(f"{path}:{number}: not JSON ({exc.msg})") from exc
                if not isinstance(data, dict):
                    raise ExportFileError(f"{path}:{number}: not a JSON object")
                if "archive" in data and "hash" not in data:
                    if trailer_seen:
                        raise ExportFileError(f"{path}:{number}: a second archive trailer")
                    trailer_seen = True
                    position.trailers.append(
                        (path, number, data["archive"], state.get("sequence", 0), state.get("hash", ""))
                    )
                    continue
                if trailer_seen:
                    raise ExportFileError(f"{path}:{number}: an event after the archive trailer")
                yield data
                state["sequence"], state["hash"] = data.get("sequence"), data.get("hash")
        finally:
            if handle is not sys.stdin:
                handle.close()


@dataclass
class Report:
    ok: bool
    text: str
    check: ChainCheck | None = None
    status: int = 0


def verify_files(
    paths: Sequence[str],
    *,
    expect_head: str | None = None,
    start_hash: str | None = None,
    start_sequence: int | None = None,
    allow_gaps: bool = False,
) -> Report:
    position = Position()
    state: dict[str, Any] = {}
    try:
        check = check_chain(
            read_events(paths, position, state),
            start_sequence=start_sequence,
            start_hash=start_hash,
            allow_gaps=allow_gaps,
        )
    except (OSError, ExportFileError, EOFError) as exc:
        return Report(False, f"CANNOT READ {exc}", status=2)
    if not check.ok:
        where = f"{position.file}:{position.line}"
        ident = f" (id {check.first_bad_id})" if check.first_bad_id is not None else ""
        return Report(
            False,
            f"BROKEN at event #{check.first_bad_sequence}{ident}, {where}: {check.reason}. "
            f"{check.checked} events verified before it.",
            check,
            1,
        )
    for path, number, trailer, last_sequence, last_hash in position.trailers:
        sequence = trailer.get("continues_from_sequence")
        digest = trailer.get("continues_from_hash")
        if sequence != last_sequence or digest != last_hash:
            return Report(
                False,
                f"BROKEN at {path}:{number}: the archive trailer says the chain continues from #{sequence} "
                f"{digest}, but its last event is #{last_sequence} {last_hash}.",
                check,
                1,
            )
    if check.checked == 0:
        return Report(False, "BROKEN: no events in the file(s).", check, 1)
    if expect_head is not None and check.last_hash != expect_head:
        return Report(
            False,
            f"BROKEN: the last event #{check.last_sequence} has hash {check.last_hash}, not the expected "
            f"{expect_head}.",
            check,
            1,
        )
    gaps = f", {check.gaps} gaps in sequence (filtered export)" if check.gaps else ""
    return Report(
        True,
        f"OK: {check.checked} events verified, up to #{check.last_sequence}{gaps}; "
        f"last hash {check.last_hash}",
        check,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleet.audit.verify_export",
        description="Re-verify the hash chain of Fleetgate audit exports and archives (JSON Lines, or .gz).",
    )
    parser.add_argument("files", nargs="+", help="export/archive files in chain order ('-' reads stdin)")
    parser.add_argument("--expect-head", metavar="HASH", help="the last event's hash must be this one")
    parser.add_argument(
        "--start-hash",
        metavar="HASH",
        help="the first event must link to this hash (e.g. the previous archive's continues_from_hash)",
    )
    parser.add_argument("--allow-gaps", action="store_true", help="accept a filtered export with gaps")
    args = parser.parse_args(argv)
    report = verify_files(args.files, expect_head=args.expect_head, start_hash=args.start_hash,
                          allow_gaps=args.allow_gaps)
    print(report.text)
    return report.status


if __name__ == "__main__":
    sys.exit(main())
