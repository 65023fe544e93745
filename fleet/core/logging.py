import logging

from fleet.core import context


class RequestContextFilter(logging.Filter):
    """Adds the current request id to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = context._current.get()
        record.request_id = ctx.request_id if ctx else "-"
        return True
