"""Rows written and read with SQLAlchemy Core, for the engine's hot path.

The ORM costs about six times a Core statement per row (a SELECT by key: 196 against 33
microseconds on the 2-core machine of docs/PERFORMANCE.md). Rows that are written once
(audit entries, LLM calls, messages, outbox rows, votes, inbound event ids) go in with
`add` and `add_once`; the status changes of runs and steps, which are read through ORM
objects, are written with `change`, which leaves the ORM nothing to flush. The tables stay
the SQLModel models, and the defaults a model declares still apply.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic_core import PydanticUndefined
from sqlalchemy import Connection, Executable, Insert, Table, Update, bindparam, insert, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, SQLModel

from storage.models import Run, Step
from storage.unit_of_work import collect, collect_row


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
def _insert(model: type[SQLModel]) -> Insert:
    return insert(table(model))


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


def add_all(session: Session, model: type[SQLModel], given: list[dict[str, Any]]) -> None:
    """INSERT rows of `model` in one statement, with the model's defaults; arms what they
    call for (a runnable step wakes the workers once the transaction has committed)."""
    if not given:
        return
    connection(session).execute(_insert(model), [values(model, row) for row in given])
    for row in given:
        collect_row(session, model, row.get("status"))


def add_once(session: Session, model: type[SQLModel], /, **given: Any) -> Any:
    """INSERT one row of `model` unless it would break a unique constraint (then nothing,
    and no error: the transaction goes on). Returns the new row's primary key, or None when
    the row was there already; a concurrent insert of the same row is waited for, as with a
    plain INSERT."""
    conn = connection(session)
    statement = _insert_once(model, conn.dialect.name)
    # a row comes back only when one was inserted (psycopg reports no rowcount here)
    return conn.execute(statement, values(model, given)).scalar()


def change(
    session: Session, obj: Run | Step, /, *, unless_changed: tuple[str, ...] = (), **changed: Any
) -> bool:
    """UPDATE the row of `obj` (loaded through the ORM) with `changed`, and set those values
    on `obj` as its stored state: the object reads as changed and the ORM has nothing left
    to flush for it. What the change arms (a step made runnable) is armed as a flush would.

    With `unless_changed`, the row is updated only while those columns still hold the values
    `obj` has for them (first writer wins); False when another transaction changed one."""
    params = {"row_id": obj.id, **changed}
    params.update({f"was_{name}": getattr(obj, name) for name in unless_changed})
    result = connection(session).execute(_update_by_id(type(obj), unless_changed), params)
    if unless_changed and result.rowcount != 1:
        return False
    for name, value in changed.items():
        set_committed_value(obj, name, value)
    collect(session, obj)
    return True


@cache
def _update_by_id(model: type[SQLModel], unless_changed: tuple[str, ...]) -> Update:
    """UPDATE .. WHERE id = :row_id (AND name = :was_name ...); the SET clause comes from the
    other parameters given."""
    t = table(model)
    where = [t.c.id == bindparam("row_id")]
    where += [t.c[name] == bindparam(f"was_{name}") for name in unless_changed]
    return update(t).where(*where)
