"""What every repository shares: the bound connection, cursor pages, insert-or-ignore."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import Column, Select, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")


class Page(NamedTuple, Generic[T]):
    """`(items, next_cursor)`; `next_cursor` is None on the last page."""

    items: list[T]
    next_cursor: str | None


MAX_PAGE = 1000


class Repository:
    """Binds queries to the unit of work's connection (and so to its transaction)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


async def fetch_page(
    conn: AsyncConnection,
    query: Select[Any],
    key: Column[Any],
    limit: int,
    cursor: str | None,
    convert: Callable[[Row[Any]], T],
    *,
    parse: Callable[[str], Any] = str,
    render: Callable[[T], str] | None = None,
) -> Page[T]:
    """One page ordered by `key` ascending, starting after `cursor` (the last key seen)."""
    check_limit(limit)
    if cursor is not None:
        query = query.where(key > parse(cursor))
    rows = (await conn.execute(query.order_by(key).limit(limit + 1))).all()
    items = [convert(row) for row in rows[:limit]]
    if len(rows) <= limit:
        return Page(items, None)
    last = items[-1]
    return Page(items, render(last) if render is not None else str(getattr(last, key.name)))


def parse_int_cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        raise ValueError(f"invalid cursor {cursor!r}") from None


def insert_or_ignore(conn: AsyncConnection, table: Table, conflict: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (conflict) DO NOTHING for the connection's dialect."""
    return dialect_insert(conn.dialect.name, table).on_conflict_do_nothing(
        index_elements=list(conflict)
    )


def dialect_insert(dialect: str, table: Table) -> Any:
    """The dialect's INSERT construct (the one that offers ON CONFLICT)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported dialect {dialect}")


DIALECTS = ("postgresql", "sqlite")


def next_number(column: Column[Any], scope: Column[Any]) -> Any:
    """`max(column) + 1` among rows sharing the bound `scope` value (1 for the first)."""
    return (
        select(func.coalesce(func.max(column), 0) + 1)
        .where(scope == bindparam(scope.name))
        .scalar_subquery()
    )
