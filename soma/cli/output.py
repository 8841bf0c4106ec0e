"""What commands print: a table of chosen columns for people, or the API's JSON with `--json`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


class Output:
    """Prints results; `as_json` passes the API's JSON through unchanged."""

    def __init__(self, console: Console, as_json: bool) -> None:
        self.console = console
        self.as_json = as_json

    def json(self, data: Any) -> None:
        text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def rows(self, items: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
        if self.as_json:
            self.json(list(items))
            return
        table = Table()
        for column in columns:
            table.add_column(column, overflow="fold")
        for item in items:
            table.add_row(*(cell(item.get(c)) for c in columns))
        self.console.print(table)

    def record(self, item: dict[str, Any], columns: Sequence[str]) -> None:
        if self.as_json:
            self.json(item)
            return
        table = Table("field", "value", show_header=False)
        for column in columns:
            table.add_row(column, cell(item.get(column)))
        self.console.print(table)

    def done(self, message: str, data: Any = None) -> None:
        if self.as_json:
            self.json(data if data is not None else {"ok": True})
        else:
            self.console.print(message, markup=False, highlight=False)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)
