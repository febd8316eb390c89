"""Rows written and read with SQLAlchemy Core, for the engine's hot path.

The ORM's unit of work costs about six times a Core statement per row (a SELECT by key: 196
against 33 microseconds here). Rows that are written once and never changed through an
object (audit entries, LLM calls, messages, outbox rows, votes) go in with these instead; the
tables stay the SQLModel models, and the defaults a model declares still apply.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic_core import PydanticUndefined
from sqlalchemy import Connection, Executable, Insert, Table, insert
from sqlmodel import Session, SQLModel


def table(model: type[SQLModel]) -> Table:
    """The model's table, for Core statements."""
    found: Table = model.__table__  # type: ignore[attr-defined]
    return found


def connection(session: Session) -> Connection:
    """The session's connection, in its transaction: Core statements skip the ORM (and its
    autoflush), so rows the session has pending must be flushed first by whoever needs them."""
    return session.connection()


@cache
def _defaults(model: type[SQLModel]) -> tuple[tuple[str, Any, bool], ...]:
    """(column, default, is a factory) for each column whose model field has a default."""
    columns = table(model).c
    found = []
    for name, field in model.model_fields.items():
        if name not in columns or columns[name].primary_key:
            continue
        if field.default_factory is not None:
            found.append((name, field.default_factory, True))
        elif field.default is not PydanticUndefined:
            found.append((name, field.default, False))
    return tuple(found)


@cache
def _insert(model: type[SQLModel], returning_id: bool = False) -> Insert:
    statement = insert(table(model))
    return statement.returning(table(model).c.id) if returning_id else statement


@cache
def _insert_once(model: type[SQLModel], dialect: str) -> Executable:
    """INSERT .. ON CONFLICT DO NOTHING, returning the key of a row it inserted."""
    t = table(model)
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(t).on_conflict_do_nothing().returning(*t.primary_key)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(t).on_conflict_do_nothing().returning(*t.primary_key)


def values(model: type[SQLModel], given: dict[str, Any]) -> dict[str, Any]:
    """`given` with the model's defaults for every column it leaves out."""
    row = dict(given)
    for name, default, factory in _defaults(model):
        if name not in row:
            row[name] = default() if factory else default
    return row


def add(session: Session, model: type[SQLModel], /, **given: Any) -> None:
    """INSERT one row of `model`, with the model's defaults."""
    connection(session).execute(_insert(model), values(model, given))


def add_once(session: Session, model: type[SQLModel], /, **given: Any) -> bool:
    """INSERT one row of `model` unless it would break a unique constraint (then nothing,
    and no error: the transaction goes on). False when the row was there already; a
    concurrent insert of the same row is waited for, as with a plain INSERT."""
    conn = connection(session)
    statement = _insert_once(model, conn.dialect.name)
    # a row comes back only when one was inserted (psycopg reports no rowcount here)
    return conn.execute(statement, values(model, given)).first() is not None


def add_returning_id(session: Session, model: type[SQLModel], /, **given: Any) -> int:
    """INSERT one row of `model` and return its new id."""
    statement = _insert(model, returning_id=True)
    new_id: int = connection(session).execute(statement, values(model, given)).scalar_one()
    return new_id
