"""Structured logs: one JSON object per line on stderr (``--log-format json``, the default) or plain text.

Fields: ``ts``, ``level``, ``logger``, ``msg``, plus what a call passes in ``extra`` (``event``, ``work``,
``attempt``, ...). Anything that looks like a Fleetgate token (``fga_a_``/``fga_b_`` and what follows) is
masked in every message and field, so a token never reaches a log even by mistake.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

TOKEN_PATTERN = re.compile(r"fga_[ab]_[A-Za-z0-9_\-]+")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def mask(value: Any) -> Any:
    if isinstance(value, str):
        return TOKEN_PATTERN.sub(lambda m: m.group(0)[:6] + "***", value)
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: mask(v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in _fields(record).items())
        line = (
            f"{datetime.fromtimestamp(record.created, UTC).isoformat(timespec='seconds')} "
            f"{record.levelname:<7} {mask(record.getMessage())}" + (f" {extra}" if extra else "")
        )
        if record.exc_info:
            line += "\n" + mask(self.formatException(record.exc_info))
        return line


def configure(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries: warnings and errors only
    logging.getLogger("fleetgate.agent").setLevel(level.upper())
