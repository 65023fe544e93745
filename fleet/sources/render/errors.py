"""The one error type of rendering: a caller marks the commit/mapping failed with its fields."""

from __future__ import annotations

from typing import Any


class RenderError(Exception):
    """A render failed.  ``file`` is relative to the repository root, ``line`` is 1-based,
    ``document`` is the 0-based index of the YAML document in the file (or in a tool's output)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        document: int | None = None,
        renderer: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.document = document
        self.renderer = renderer
        super().__init__(self._text())

    def _text(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            if self.document is not None:
                where += f" (document {self.document})"
            where += ": "
        elif self.document is not None:
            where = f"document {self.document}: "
        return where + self.message

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "document": self.document,
            "renderer": self.renderer,
            "text": str(self),
        }
