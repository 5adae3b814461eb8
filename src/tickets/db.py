"""Engines and sessions. One request is one transaction, committed before the response is sent.

SQLite: WAL, foreign keys, a busy timeout, and `BEGIN IMMEDIATE` for every transaction that may
write, so writers queue on the database lock instead of failing half-way through an upgrade from a
read lock. Read-only requests use a deferred `BEGIN` and never block writers (WAL).

PostgreSQL: asyncpg, a fixed pool (`max_overflow=0`: an overflow connection is closed on return,
which would start a new backend per request under load) and a server-side `lock_timeout`, so a
lock wait becomes a retryable `409 busy` instead of an open-ended stall.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import DateTime, Insert, Select, bindparam, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.clock import as_utc
from tickets.config import Settings

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

READ_ONLY = "tickets_read_only"
T = TypeVar("T")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both engines (SQLite stores it without the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        return None if value is None else as_utc(value)


def make_engine(settings: Settings) -> AsyncEngine:
    """The async engine for DATABASE_URL, tuned per backend."""
    url = settings.database_url
    if settings.is_sqlite:
        engine = create_async_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine, busy_timeout_ms=max(settings.db_lock_timeout_ms, 5000))
        return engine
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_recycle=1800,
        connect_args={
            "server_settings": {
                "application_name": "tickets",
                "lock_timeout": str(settings.db_lock_timeout_ms),
                "idle_in_transaction_session_timeout": "60000",
            }
        },
    )
    _discard_closed_connections(engine)
    return engine


def _discard_closed_connections(engine: AsyncEngine) -> None:
    """A pooled connection that the driver already knows is closed (the server restarted or dropped it
    while it sat in the pool) is replaced at checkout instead of failing the request's first statement.
    It costs no round trip, unlike `pool_pre_ping`; a connection that dies unnoticed still fails once, and
    SQLAlchemy then invalidates the whole pool."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the pooled connection was closed by the server")


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN is ours (IMMEDIATE for writers).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


@dataclass
class Database:
    """The engine and the two session factories of one process."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    read_sessions: async_sessionmaker[AsyncSession]
    # Reads that need no snapshot: on PostgreSQL each statement runs on its own (autocommit), seeing
    # the latest committed state, with no BEGIN and ROLLBACK round trips; on SQLite a read transaction.
    glances: async_sessionmaker[AsyncSession]

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        engine = make_engine(settings)
        read_engine = engine.execution_options(**{READ_ONLY: True})
        glance_engine = read_engine if settings.is_sqlite else engine.execution_options(isolation_level="AUTOCOMMIT")
        return cls(
            engine=engine,
            sessions=async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False),
            read_sessions=async_sessionmaker(read_engine, class_=AsyncSession, expire_on_commit=False),
            glances=async_sessionmaker(glance_engine, class_=AsyncSession, expire_on_commit=False),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def write_alone(self, statement: Executable, params: dict[str, Any] | None = None) -> int:
        """Run one write statement in a transaction of its own, committed at once; returns its rowcount.

        On PostgreSQL it runs in autocommit mode on the driver itself (`on_driver`): one round trip
        instead of three (BEGIN, the statement, COMMIT), a single statement being atomic anyway, and
        none of SQLAlchemy's per-execution work. A constraint violation is still SQLAlchemy's
        IntegrityError, and a lock timeout its DBAPIError, as from a session. SQLite keeps its
        `BEGIN IMMEDIATE`."""
        if self.is_sqlite:
            async with self.engine.begin() as conn:
                return int((await conn.execute(statement, params)).rowcount)
        sql, args, _ = _driver_call(statement, self.engine.dialect, params or {})
        with _as_sqlalchemy_errors(sql, args):
            status = await self.on_driver(lambda conn: conn.execute(sql, *args))
        return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 1", "UPDATE 1", "DELETE 0"

    async def glance(self, statement: Executable, params: dict[str, Any]) -> list[Sequence[Any]]:
        """The rows of one read statement, from the latest committed state, outside any transaction
        (see `glances`). On PostgreSQL it runs on the driver itself, as `write_alone` does."""
        if self.is_sqlite:
            async with self.glances() as session:
                return list((await session.execute(statement, params)).all())
        sql, args, prepared = _driver_call(statement, self.engine.dialect, params)
        with _as_sqlalchemy_errors(sql, args):
            records = await self.on_driver(lambda conn: conn.fetch(sql, *args))
        return _rows(records, prepared)

    async def on_driver(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """PostgreSQL: run `work` on the asyncpg connection of a pooled connection, in autocommit (no
        transaction is open on it). A pooled connection found dead (the server restarted, a proxy dropped
        it) is discarded and `work` run again on the next one, until a fresh connection is reached: `work`
        must be safe to run twice (a statement may have been carried out before its connection died)."""
        attempts = self._retry_attempts
        checkout = self.engine.sync_engine.raw_connection  # the pool's own checkout: no Connection around it
        for attempt in range(1, attempts + 1):
            pooled = await greenlet_spawn(checkout)
            try:
                driver = pooled.driver_connection
                assert driver is not None
                return await work(driver)
            except Exception as exc:
                if not _connection_lost(exc):
                    raise
                # SQLAlchemy would invalidate it had it run the statement; here it is told so.
                await greenlet_spawn(pooled.invalidate)
                if attempt == attempts:
                    raise
            finally:
                await greenlet_spawn(pooled.close)  # back to the pool (a no-op once invalidated)
        raise AssertionError("unreachable")

    @cached_property
    def _retry_attempts(self) -> int:
        # enough tries to get past every pooled connection a server restart left dead
        pool = self.engine.pool
        return pool.size() + 1 if isinstance(pool, QueuePool) else 2


@contextmanager
def _as_sqlalchemy_errors(sql: str, args: Sequence[Any]) -> Iterator[None]:
    """The driver's errors raised as SQLAlchemy would have raised them, so that the app answers them the
    same way: a constraint violation is an IntegrityError, a lost connection a DBAPIError that says so
    (503), any other database error a DBAPIError (a lock timeout: 409 busy)."""
    try:
        yield
    except Exception as exc:
        if _connection_lost(exc):
            raise DBAPIError(sql, tuple(args), exc, connection_invalidated=True) from exc
        if isinstance(exc, asyncpg.exceptions.IntegrityConstraintViolationError):
            raise IntegrityError(sql, tuple(args), exc) from exc
        if isinstance(exc, asyncpg.exceptions.PostgresError):
            raise DBAPIError(sql, tuple(args), exc) from exc
        raise


def _connection_lost(exc: Exception) -> bool:
    """The connection, not the statement, failed: closed, dropped, the server shutting the session down
    (SQLSTATE classes 08 and 57P), or the driver left mid-operation by such a failure."""
    if isinstance(exc, asyncpg.exceptions.PostgresError):
        return isinstance(exc, asyncpg.exceptions.PostgresConnectionError) or str(exc.sqlstate).startswith("57P")
    return isinstance(exc, asyncpg.exceptions.InterfaceError | asyncpg.exceptions.InternalClientError | OSError)


# Where each positional argument of a statement comes from: (parameter name, index in its list or None,
# bind processor or None, None), or, for a value fixed in the statement itself, ("", None, processor, value).
_Source = tuple[str, int | None, Callable[[Any], Any] | None, Any]


@dataclass(frozen=True)
class _Layout:
    """A statement's SQL text and argument sources for one set of lengths of its `IN` lists."""

    sql: str
    sources: tuple[_Source, ...]


@dataclass(frozen=True)
class _ForDriver:
    """A statement compiled once for one dialect, with the type processing SQLAlchemy would apply."""

    compiled: SQLCompiler
    binds: dict[str, Any]  # bind parameter name -> bind processor (only those that have one)
    columns: tuple[tuple[int, Any], ...]  # (position, result processor) of each selected column that has one
    expanding: tuple[str, ...] = ()  # the parameters bound to `IN` lists
    cacheable: bool = True  # False when the SQL text depends on values, not just list lengths
    # By the lists' lengths; None where the arguments could not be traced back (expanded on every call).
    layouts: dict[tuple[int, ...], _Layout | None] = field(default_factory=dict)


@lru_cache(maxsize=256)
def _for_driver(statement: Executable, dialect: Dialect, column_keys: tuple[str, ...] | None) -> _ForDriver:
    """`statement` compiled once for `dialect` (`column_keys`: the columns an INSERT is given)."""
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect, column_keys=list(column_keys) if column_keys else None)
    assert isinstance(compiled, SQLCompiler)
    binds: dict[str, Any] = {}
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds[name] = process
    selected = getattr(statement, "selected_columns", None) or ()
    processors = (column.type.dialect_impl(dialect).result_processor(dialect, None) for column in selected)
    columns = tuple((index, process) for index, process in enumerate(processors) if process is not None)
    post = compiled.post_compile_params
    cacheable = not compiled.literal_execute_params and all(bind.expanding for bind in post)
    return _ForDriver(compiled, binds, columns, tuple(sorted(bind.key for bind in post)), cacheable)


def _layout(prepared: _ForDriver, params: dict[str, Any]) -> _Layout | None:
    """The SQL and argument sources that SQLAlchemy's per-call expansion gives for `params`, worked out
    from one expansion: the same for any parameters whose `IN` lists have the same lengths. None when a
    position cannot be traced back to a parameter (then every call expands for itself)."""
    state = prepared.compiled.construct_expanded_state(params)
    processors = {**prepared.binds, **state.processors} if state.processors else prepared.binds
    elements = {f"{name}_{i + 1}": (name, i) for name in prepared.expanding for i in range(len(params[name]))}
    sources: list[_Source] = []
    for name, value in zip(state.positiontup or (), state.positional_parameters, strict=True):
        if name in elements:
            source, index = elements[name]
            found = params[source][index]
        elif name in params and name not in prepared.expanding:
            source, index, found = name, None, params[name]
        else:  # a value fixed in the statement (a literal bound by SQLAlchemy)
            bind = prepared.compiled.binds.get(name)
            if bind is None or bind.callable is not None or name in params:
                return None
            sources.append(("", None, processors.get(name), value))
            continue
        if found is not value:
            return None
        sources.append((source, index, processors.get(name), None))
    return _Layout(state.statement, tuple(sources))


def _driver_call(statement: Executable, dialect: Dialect, params: dict[str, Any]) -> tuple[str, list[Any], _ForDriver]:
    """The SQL text and positional arguments that run `statement` with `params` on the driver itself:
    what SQLAlchemy would send, without its per-execution work. Lists bound to expanding parameters
    (`IN`) are spread out, as SQLAlchemy does; the SQL text that gives for each set of list lengths is
    kept with the statement, so that a call only gathers its arguments."""
    keys = tuple(sorted(params)) if isinstance(statement, Insert) else None
    prepared = _for_driver(statement, dialect, keys)
    layout: _Layout | None = None
    if prepared.cacheable:
        lengths = tuple(len(params[name]) for name in prepared.expanding)
        if lengths in prepared.layouts:
            layout = prepared.layouts[lengths]
        elif len(prepared.layouts) < 64:
            layout = prepared.layouts[lengths] = _layout(prepared, params)
    if layout is None:
        state = prepared.compiled.construct_expanded_state(params)
        processors = {**prepared.binds, **state.processors} if state.processors else prepared.binds
        args = [
            processors[name](value) if name in processors else value
            for name, value in zip(state.positiontup or (), state.positional_parameters, strict=True)
        ]
        return state.statement, args, prepared
    args = []
    for name, index, process, constant in layout.sources:
        value = constant if not name else params[name] if index is None else params[name][index]
        args.append(value if process is None else process(value))
    return layout.sql, args, prepared


def _rows(records: Sequence[Any], prepared: _ForDriver) -> list[Sequence[Any]]:
    """The driver's rows with each column's result processing applied (what a Row would hold)."""
    if not prepared.columns:
        return list(records)
    rows: list[Sequence[Any]] = []
    for record in records:
        values = list(record)
        for index, process in prepared.columns:
            values[index] = process(values[index])
        rows.append(values)
    return rows


async def fetch_rows(conn: AsyncConnection, statement: Executable, params: dict[str, Any]) -> list[Sequence[Any]]:
    """The rows of a read `statement`, in `conn`'s transaction, with the values SQLAlchemy would give. On
    PostgreSQL the statement runs on the driver itself, without SQLAlchemy's per-execution work (the
    compiled statement is kept, and its rows are not made into Row objects)."""
    if conn.dialect.name != "postgresql":
        return list((await conn.execute(statement, params)).all())
    sql, args, prepared = _driver_call(statement, conn.dialect, params)
    return _rows(await _fetch_on_driver(conn, sql, args), prepared)


async def _fetch_on_driver(conn: AsyncConnection, sql: str, args: Sequence[Any]) -> list[Any]:
    """The records of `sql` run on `conn`'s asyncpg connection, with errors raised as SQLAlchemy's."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    with _as_sqlalchemy_errors(sql, args):
        try:
            return list(await driver.fetch(sql, *args))
        except Exception as exc:
            if _connection_lost(exc):
                await conn.invalidate()  # as SQLAlchemy does when its own statement finds the connection gone
            raise


async def no_transaction_open(session: AsyncSession) -> bool:
    """Whether `session` is on PostgreSQL and has opened no transaction on the database yet, so that a
    statement run by `insert_all_at_once` commits on its own."""
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        return False
    driver = (await conn.get_raw_connection()).driver_connection
    return driver is not None and not driver.is_in_transaction()


@asynccontextmanager
async def request_transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed after the route returns, rolled back if it raises."""
    db: Database = request.app.state.db
    factory = db.read_sessions if request.method in ("GET", "HEAD") else db.sessions
    async with factory() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """`request_transaction` as a dependency (`SessionDep`)."""
    async with request_transaction(request) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def insert_all(
    session: AsyncSession,
    batches: Sequence[tuple[Insert, Sequence[dict[str, Any]]]],
    *,
    then: tuple[Select[Any], dict[str, Any]] | None = None,
) -> Sequence[Any] | None:
    """Insert rows into several tables in the session's transaction, parents before children. Every row
    of one statement has the same keys. `then`, a read and its parameters (no IN lists), is run after the
    writes, in the same transaction, and its first row returned: a read that needs none of these rows
    but must see the transaction's earlier writes (in one round trip with them on PostgreSQL).

    PostgreSQL: one round trip. Each table's rows are one multi-row INSERT, all but the last as
    data-modifying CTEs of the last (PostgreSQL checks foreign keys at the end of the statement, so a
    child may reference a parent written by a sibling); with `then`, every INSERT is a CTE of the read,
    which sees the state before the statement (the transaction's earlier writes, not these rows). The
    combined statement is built once per shape (which tables, which columns, how many rows) and then only
    bound, since a multi-row INSERT built per call would be compiled per call. SQLite: one executemany
    per table, in order, then the read."""
    todo = [(statement, list(rows)) for statement, rows in batches if rows]
    conn = await session.connection()
    if conn.dialect.name != "postgresql" or not todo:
        for statement, rows in todo:
            await conn.execute(statement, rows)
        return None if then is None else (await conn.execute(then[0], then[1])).first()
    sql, args = _insert_all_call(todo, then, conn.dialect)
    result = await conn.exec_driver_sql(sql, tuple(args))
    return None if then is None else result.first()


async def insert_all_at_once(
    session: AsyncSession,
    batches: Sequence[tuple[Insert, Sequence[dict[str, Any]]]],
    *,
    then: tuple[Select[Any], dict[str, Any]],
) -> Sequence[Any]:
    """`insert_all`'s one statement on PostgreSQL, run in autocommit on the driver by a session that has
    no transaction open (`no_transaction_open`): atomic, as any single statement is, and committed by itself,
    without the BEGIN and COMMIT round trips. `then` may hold data-modifying CTEs of its own. Returns
    `then`'s first row."""
    conn = await session.connection()
    todo = [(statement, list(rows)) for statement, rows in batches if rows]
    sql, args = _insert_all_call(todo, then, conn.dialect)
    first: Sequence[Any] = (await _fetch_on_driver(conn, sql, args))[0]
    return first


@dataclass(frozen=True)
class SqlValue:
    """A value in a row given to `insert_all_at_once` that is SQL rather than a parameter: an expression
    over a CTE of the `then` read (the id of a row its UPDATE took, say). `key` names the expression in
    the combined statement's cache: one key, one expression."""

    key: str
    sql: ColumnElement[Any] = field(compare=False)


def _insert_all_call(
    todo: Sequence[tuple[Insert, Sequence[dict[str, Any]]]],
    then: tuple[Select[Any], dict[str, Any]] | None,
    dialect: Dialect,
) -> tuple[str, list[Any]]:
    """The SQL text and positional arguments of `insert_all`'s combined statement on PostgreSQL."""
    shape = tuple((statement, tuple(rows[0]), len(rows), _sql_values(rows)) for statement, rows in todo)
    read, params = then if then is not None else (None, {})
    sql, binds, constants = _combined_insert(shape, read, tuple(sorted(params)), dialect)
    values = [row[column] for _, rows in todo for row in rows for column in rows[0]]
    values += [params[name] for name in sorted(params)] + constants
    return sql, [process(values[i]) for i, process in binds]


def _sql_values(rows: Sequence[dict[str, Any]]) -> tuple[tuple[int, str, SqlValue], ...]:
    """(row, column, value) of each `SqlValue` in `rows`."""
    return tuple(
        (i, column, value) for i, row in enumerate(rows) for column, value in row.items() if isinstance(value, SqlValue)
    )


@lru_cache(maxsize=512)
def _combined_insert(
    shape: tuple[tuple[Insert, tuple[str, ...], int, tuple[tuple[int, str, SqlValue], ...]], ...],
    read: Select[Any] | None,
    read_params: tuple[str, ...],
    dialect: Dialect,
) -> tuple[str, list[tuple[int, Callable[[Any], Any]]], list[Any]]:
    """The SQL of `shape`'s combined INSERT (of `read` after them, if given); for each of its positional
    parameters, the index of its value in: the rows' values (table by table, row by row, column by
    column), then `read`'s parameters by name (`read_params`), then the constants (the third item:
    values written into `read` itself), with the column type's bind processing. SQLAlchemy does not cache
    multi-row INSERTs, so this compiles each shape once. A row's `SqlValue` is written as its SQL (its
    place among the values is kept, and never bound)."""
    parts = []
    names: dict[str, int] = {}
    for n, (statement, columns, count, sql_values) in enumerate(shape):
        as_sql = {(i, column): value.sql for i, column, value in sql_values}
        rows = []
        for i in range(count):
            row: dict[str, Any] = {}
            for column in columns:
                name = f"w{n}_{i}_{column}"
                names[name] = len(names)
                sql = as_sql.get((i, column))
                row[column] = bindparam(name, type_=statement.table.c[column].type) if sql is None else sql
            rows.append(row)
        parts.append(statement.values(rows))
    for name in read_params:
        names[name] = len(names)
    before, combined = (parts[:-1], parts[-1]) if read is None else (parts, read)
    for n, part in enumerate(before):
        combined = combined.add_cte(part.cte(f"write_{n}"))
    compiled = combined.compile(dialect=dialect)
    binds: list[tuple[int, Callable[[Any], Any]]] = []
    constants: list[Any] = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        if name not in names:  # a value in `read` itself (e.g. a status it compares with)
            assert not bind.expanding and bind.callable is None, name
            names[name] = len(names)
            constants.append(bind.value)
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        binds.append((names[name], process or _same))
    return str(compiled), binds, constants


def _same(value: Any) -> Any:
    return value
