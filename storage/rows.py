"""Rows written and read with SQLAlchemy Core, for the engine's hot path.

The ORM costs about six times a Core statement per row (a SELECT by key: 196 against 33
microseconds on the 2-core machine of docs/PERFORMANCE.md). Rows that are written once
(audit entries, LLM calls, messages, outbox rows, votes, inbound event ids) go in with
`add` and `add_once`; the status changes of runs and steps are written with `change`, which
leaves the ORM nothing to flush. Runs and steps are read with `load` and a new run is made
with `create`: each gives a record, an object of the model holding the stored row that is not
in the session (the session's identity map, flushes and commits never look at it; it is
changed with `change` alone). The tables stay the SQLModel models, and the defaults a model
declares still apply.

All of these, and the claims' SELECTs, go to the driver directly (`execute`, `send`): each
statement is compiled once per dialect and set of parameters, its parameters pass through the
same type conversions SQLAlchemy applies, and so do the values it reads. What SQLAlchemy's
execution layer adds around a statement (about half of the time of such an INSERT) is left
out, but what users of it see stays: the `before_cursor_execute` and `after_cursor_execute`
events, its exception classes, and a connection that dropped is invalidated.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from sqlalchemy import (
    Connection,
    Executable,
    Insert,
    Table,
    Update,
    bindparam,
    insert,
    inspect,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapper, configure_mappers
from sqlalchemy.orm.attributes import instance_dict, set_committed_value
from sqlalchemy.types import TypeEngine
from sqlmodel import Session, SQLModel

from storage.models import Run, Step
from storage.unit_of_work import collect, collect_row


def table(model: type[SQLModel]) -> Table:
    """The model's table, for Core statements."""
    found: Table = model.__table__  # type: ignore[attr-defined]
    return found


def connection(session: Session) -> Connection:
    """The session's connection, in its transaction: Core statements skip the ORM (and its
    autoflush), so rows the session has pending must be flushed first by whoever needs them.
    Looked up once per transaction of the session (a lookup costs about a statement's
    conversions), unless the session was given its connection (`use_connection`)."""
    given: Connection | None = session.info.get(_GIVEN)
    if given is not None:
        return given
    transaction = session.get_transaction()
    known = session.info.get(_CONNECTION)
    if transaction is not None and known is not None and known[0] is transaction:
        found: Connection = known[1]
        return found
    found = session.connection()
    session.info[_CONNECTION] = (session.get_transaction(), found)
    return found


_CONNECTION = "crewchief.connection"  # session.info: (its transaction, that one's connection)
_GIVEN = "crewchief.connection.given"


def use_connection(session: Session, conn: Connection) -> None:
    """Core statements of `session` go to `conn`: a session bound to a connection whose
    transaction it joins (a group commit's, storage.db) uses no other for the rest of its
    life."""
    session.info[_GIVEN] = conn


@cache
def _defaults(model: type[SQLModel]) -> tuple[tuple[str, Any, bool], ...]:
    """(column, default, is a factory) for each column whose model field has a default."""
    columns = table(model).c
    found = []
    for name, info in model.model_fields.items():
        if name not in columns or columns[name].primary_key:
            continue
        if info.default_factory is not None:
            found.append((name, info.default_factory, True))
        elif info.default is not PydanticUndefined:
            found.append((name, info.default, False))
    return tuple(found)


@cache
def _insert(model: type[SQLModel]) -> Insert:
    # inline: no RETURNING of the new key, which nobody reads (PostgreSQL would send it)
    return insert(table(model)).inline()


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
    execute(session, _insert(model), [values(model, given)])


def add_all(session: Session, model: type[SQLModel], given: list[dict[str, Any]]) -> None:
    """INSERT rows of `model` in one statement, with the model's defaults; arms what they
    call for (a runnable step wakes the workers once the transaction has committed)."""
    if not given:
        return
    execute(session, _insert(model), [values(model, row) for row in given])
    for row in given:
        collect_row(session, model, row.get("status"))


def add_once(session: Session, model: type[SQLModel], /, **given: Any) -> Any:
    """INSERT one row of `model` unless it would break a unique constraint (then nothing,
    and no error: the transaction goes on). Returns the new row's primary key, or None when
    the row was there already; a concurrent insert of the same row is waited for, as with a
    plain INSERT."""
    statement = _insert_once(model, connection(session).dialect.name)
    # a row comes back only when one was inserted (psycopg reports no rowcount here)
    found = execute(session, statement, [values(model, given)], fetch=True).rows
    return found[0][0] if found else None


M = TypeVar("M", bound=SQLModel)


def load(session: Session, model: type[M], query: Executable, params: dict[str, Any]) -> list[M]:
    """The records of `model` whose rows `query` (a SELECT of all of its table's columns)
    reads. A row read before in this session gives the object it gave then, as it is (as the
    ORM's identity map does for a query without populate_existing), and so does a row whose
    object the ORM loaded into the session; what the session has pending is flushed first, as
    a query's autoflush does."""
    found: list[M] = load_joined(session, (model,), query, params)[0]
    return found


def load_joined(
    session: Session,
    models: tuple[type[SQLModel], ...],
    query: Executable,
    params: dict[str, Any],
) -> list[list[Any]]:
    """`load` for a SELECT of all the columns of each of `models`' tables, one table after the
    other (a join): for each model, its objects in the order the rows first name them."""
    session.flush()
    found = execute(session, query, [params], fetch=True).rows
    held = session.identity_map
    records: dict[tuple[type[SQLModel], Any], Any] = session.info.setdefault(_RECORDS, {})
    loaded: list[list[Any]] = []
    start = 0
    for model in models:
        mapper, keys = _mapper(model), _keys(model)
        end = start + len(keys)
        objects: dict[Any, Any] = {}
        for row in found:
            key = row[start]  # the table's first column: its primary key
            if key is not None and key not in objects:  # None: an outer join found no row
                obj = records.get((model, key))
                if obj is None:
                    obj = held.get(mapper.identity_key_from_primary_key((key,)))
                if obj is None:
                    obj = _record(session, model, dict(zip(keys, row[start:end], strict=True)))
                objects[key] = obj
        loaded.append(list(objects.values()))
        start = end
    return loaded


@cache
def _keys(model: type[SQLModel]) -> tuple[str, ...]:
    columns = table(model).c
    assert columns[0].primary_key, model  # load_joined tells rows apart by it
    return tuple(column.key for column in columns)


def create(session: Session, model: type[M], /, **given: Any) -> M:
    """INSERT one row of `model`, with the model's defaults, and its record: the row as
    stored (every column, the new key filled in)."""
    found = execute(session, _insert_returning(model), [values(model, given)], fetch=True).rows
    return _record(session, model, dict(zip(_keys(model), found[0], strict=True)))


def _record(session: Session, model: type[M], row: dict[str, Any]) -> M:
    """An object of `model` holding `row` (every column), kept out of the session: the ORM
    neither flushes nor expires it, and adding it to a session would insert it again. The
    session remembers it for `load` (the records it has read or made)."""
    obj: M = _mapper(model).class_manager.new_instance()
    instance_dict(obj).update(row)
    session.info.setdefault(_RECORDS, {})[model, row["id"]] = obj
    return obj


_RECORDS = "crewchief.records"  # session.info: (model, key) -> the record of that row


@cache
def _mapper(model: type[SQLModel]) -> Mapper[Any]:
    configure_mappers()  # as the ORM's first query in a process would
    return inspect(model)


@cache
def _insert_returning(model: type[SQLModel]) -> Insert:
    return insert(table(model)).returning(*table(model).c)


def change(
    session: Session, obj: Run | Step, /, *, unless_changed: tuple[str, ...] = (), **changed: Any
) -> bool:
    """UPDATE the row of `obj` (a record, or an object the ORM loaded) with `changed`, and set
    those values on `obj` as its stored state: the object reads as changed and the ORM has
    nothing left to flush for it. What the change arms (a step made runnable) is armed as a
    flush would.

    With `unless_changed`, the row is updated only while those columns still hold the values
    `obj` has for them (first writer wins); False when another transaction changed one."""
    params = {"row_id": obj.id, **changed}
    params.update({f"was_{name}": getattr(obj, name) for name in unless_changed})
    result = execute(session, _update_by_id(type(obj), unless_changed), [params])
    if unless_changed and result.rowcount != 1:
        return False
    for name, value in changed.items():
        set_committed_value(obj, name, value)
    collect(session, obj)
    return True


def change_by_id(session: Session, model: type[SQLModel], changes: list[dict[str, Any]]) -> None:
    """UPDATE rows of `model` by key, in one executemany: each of `changes` names its row by
    `row_id` and gives its new values (all alike). For rows nobody holds as objects (ORM
    objects or records)."""
    if changes:
        execute(session, _update_by_id(model, ()), changes)


@cache
def _update_by_id(model: type[SQLModel], unless_changed: tuple[str, ...]) -> Update:
    """UPDATE .. WHERE id = :row_id (AND name = :was_name ...); the SET clause comes from the
    other parameters given."""
    t = table(model)
    where = [t.c.id == bindparam("row_id")]
    where += [t.c[name] == bindparam(f"was_{name}") for name in unless_changed]
    return update(t).where(*where)


@dataclass(frozen=True, slots=True)
class Executed:
    """What the driver said of a statement: rows it changed, and the rows it returned (a
    named tuple each, its fields the statement's column keys)."""

    rowcount: int
    rows: list[Any]


# a row class, and the position and converter of each column that has one
_Reader = tuple[Any, tuple[tuple[int, Callable[[Any], Any]], ...]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A statement compiled for one dialect and one set of parameter names."""

    sql: str
    convert: tuple[tuple[str, Callable[[Any], Any]], ...]  # SQLAlchemy's type conversions
    # for positional paramstyles: each parameter in order, with its conversion (None: none)
    positions: tuple[tuple[str, Callable[[Any], Any] | None], ...] | None
    fixed: dict[str, Any]  # the values the statement itself holds (an OFFSET 0 SQLite adds)
    returns: tuple[tuple[str, TypeEngine[Any]], ...]  # each returned column's key and type
    # a row class and its converters, per set of column type codes the driver describes
    readers: dict[tuple[Any, ...], _Reader] = field(default_factory=dict)

    def parameters(self, given: dict[str, Any]) -> Any:
        row = {**self.fixed, **given} if self.fixed else given
        if self.positions is not None:
            return tuple([row[n] if p is None else p(row[n]) for n, p in self.positions])
        row = dict(row)
        for name, process in self.convert:
            row[name] = process(row[name])
        return row

    def read(self, cursor: Any, dialect: Dialect) -> list[Any]:
        """The cursor's rows, each value converted as SQLAlchemy converts what it reads."""
        codes = tuple(column[1] for column in cursor.description)
        reader = self.readers.get(codes)
        if reader is None:
            processors = (
                type_.dialect_impl(dialect).result_processor(dialect, code)
                for (_, type_), code in zip(self.returns, codes, strict=True)
            )
            row_of: Any = namedtuple("Row", [key for key, _ in self.returns], rename=True)  # type: ignore[misc]
            reader = self.readers[codes] = (
                row_of._make,
                tuple((i, p) for i, p in enumerate(processors) if p is not None),
            )
        make, convert = reader
        found = cursor.fetchall()
        if not convert:
            return [make(row) for row in found]
        read = []
        for row in found:
            values = list(row)
            for i, process in convert:
                values[i] = process(values[i])
            read.append(make(values))
        return read


@lru_cache(maxsize=1024)
def _prepare(statement: Executable, dialect: Dialect, names: frozenset[str]) -> _Prepared:
    compiled = statement.compile(dialect=dialect, column_keys=sorted(names))  # type: ignore[attr-defined]
    binds = compiled.binds
    required = {name for name, bind in binds.items() if bind.required}
    # every parameter the statement sends, with the values of those it holds itself
    sent = compiled.construct_params({name: None for name in required & names})
    rendered_late = compiled.post_compile_params or compiled.literal_execute_params
    if required - names or names - sent.keys() or compiled.escaped_bind_names or rendered_late:
        # Core would rename escaped names and render lists (IN) per execution; this path does
        # neither
        raise ValueError(
            f"rows.execute needs the statement's parameters {sorted(required)} under plain "
            f"names, none of them a list; given {sorted(names)}"
        )
    convert = []
    for name in sent:
        process = binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            convert.append((name, process))
    order = compiled.positiontup
    processes = dict(convert)
    return _Prepared(
        sql=compiled.string,
        convert=tuple(convert),
        positions=None if order is None else tuple((n, processes.get(n)) for n in order),
        fixed={name: value for name, value in sent.items() if name not in names},
        returns=tuple((column[0], column[3]) for column in compiled._result_columns),
    )


def execute(
    session: Session, statement: Executable, rows: list[dict[str, Any]], *, fetch: bool = False
) -> Executed:
    """Run `statement` (an INSERT, UPDATE or SELECT whose parameters are exactly the keys of
    each of `rows`, all alike; several rows make an executemany) on the session's connection,
    in its transaction, through the driver; with `fetch`, the rows it returns (a SELECT's, or
    RETURNING's), read as SQLAlchemy would. Listeners of the cursor events get no execution
    context (None)."""
    conn = connection(session)
    dialect = conn.dialect
    prepared = _prepare(statement, dialect, frozenset(rows[0]))
    sql, many = prepared.sql, len(rows) > 1
    try:
        converted = [prepared.parameters(row) for row in rows]
    except Exception as exc:  # a value its column's type cannot take: as Core reports it
        raise DBAPIError.instance(sql, rows, exc, dialect.loaded_dbapi.Error) from exc
    parameters: Any = converted if many else converted[0]
    return send(conn, sql, parameters, many=many, read=prepared.read if fetch else None)


def send(
    conn: Connection,
    sql: str,
    parameters: Any = (),
    *,
    many: bool = False,
    read: Callable[[Any, Dialect], list[Any]] | None = None,
) -> Executed:
    """`sql` with `parameters` as the driver takes them, sent on `conn` past SQLAlchemy's
    execution layer as `execute` sends its statements; also a statement of crewchief's own,
    such as SQLite's BEGIN IMMEDIATE. `read` reads what it returns. A failure raises
    SQLAlchemy's exception for it (the engine's handle_error listeners are not called)."""
    dialect = conn.dialect
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    cursor = dbapi_conn.cursor()
    events = conn.dispatch
    try:
        for listener in events.before_cursor_execute:  # each may rewrite them (retval=True)
            sql, parameters = listener(conn, cursor, sql, parameters, None, many)
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        for after in events.after_cursor_execute:
            after(conn, cursor, sql, parameters, None, many)
        return Executed(cursor.rowcount, read(cursor, dialect) if read else [])
    except Exception as exc:  # in SQLAlchemy's classes: a driver's error, or a value it refused
        from_driver: Any = exc if isinstance(exc, dialect.loaded_dbapi.Error) else None
        dropped = from_driver is not None and dialect.is_disconnect(from_driver, dbapi_conn, cursor)
        if dropped:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            parameters,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=dropped,
            dialect=dialect,
        ) from exc
    finally:
        cursor.close()
