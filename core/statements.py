"""Single-table statements for hot paths (an HL7 order, a C-STORE): SQL built once per
model and shape, run on the driver's cursor, with Django's own field conversions both ways.

Why not the ORM there: on the CI machine compiling a query costs ~0.35 ms for an INSERT and
~0.6-0.8 ms for a ``.first()``, against ~0.05 ms for the same statement here; an HL7 order
needs a dozen statements. What is kept from Django: instances are real model objects
(``Model.from_db``); values go through ``pre_save``/``get_db_prep_save`` (``auto_now``, JSON,
booleans, time zones) and come back through the backend's converters; the statements run in
Django's connection and transaction (``atomic`` blocks hold), and driver errors become
Django's (``IntegrityError``...). What is not: model signals and ``save()`` overrides (callers
do what those would do; this project registers no signals), query logging in DEBUG.

What it leans on beyond Django's documented API, all in this module: the backend wrapper's
``connection``, ``wrap_database_errors``, ``validate_no_broken_transaction`` and
``ops.get_db_converters``, ``Field.get_col`` and ``Model._state``. Django is pinned
(requirements.txt); ``tests/service/test_statements.py`` compares every function with the ORM
on SQLite, and ``tests/scale/test_statements_postgresql.py`` on PostgreSQL, so an upgrade that
changes one of them fails there first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models import Field, Model
from django.utils import timezone

M = TypeVar("M", bound=Model)
T = TypeVar("T")

_cache: dict[tuple, Any] = {}


def insert(obj: M, *, if_new: bool = False) -> M | None:
    """INSERT ``obj`` (an unsaved instance) with every concrete column; sets its primary key.
    ``if_new``: when a unique constraint already holds such a row, insert nothing and return
    None (ON CONFLICT DO NOTHING: no savepoint needed for a race)."""
    db = connections[DEFAULT_DB_ALIAS]
    model = type(obj)
    has_pk = obj.pk is not None
    key = ("insert", model, has_pk, if_new, db.vendor)
    found = _cache.get(key)
    if found is None:
        meta = model._meta
        fields = [f for f in meta.concrete_fields if has_pk or not f.primary_key]
        returning = not has_pk and db.features.can_return_columns_from_insert
        if if_new and not returning:
            raise NotImplementedError("if_new needs INSERT ... RETURNING")
        sql = (f"INSERT INTO {_qn(db, meta.db_table)} "
               f"({', '.join(_qn(db, f.column) for f in fields)}) "
               f"VALUES ({', '.join(['%s'] * len(fields))})")
        if if_new:
            sql += " ON CONFLICT DO NOTHING"
        if returning:
            sql += f" RETURNING {_qn(db, meta.pk.column)}"
        found = _cache[key] = (_paramstyle(db, sql), _preparers(fields), returning)
    sql, preparers, returning = found
    params = [_prepare(obj, field, attname, plain, db, True)
              for field, attname, plain in preparers]
    cursor = _execute(db, sql, params)
    if not has_pk:
        row = cursor.fetchone() if returning else (cursor.lastrowid,)
        if row is None:  # if_new, and the row was there
            return None
        obj.pk = row[0]
    obj._state.adding, obj._state.db = False, db.alias
    return obj


def insert_row(model: type[Model], **values: Any) -> Any:
    """INSERT one row of ``model`` without building an instance (for rows nobody reads back
    here: history, audit, link rows); the primary key. Values by field name or attname
    (foreign keys as ids or instances); the rest get their defaults, ``auto_now(_add)`` now."""
    db = connections[DEFAULT_DB_ALIAS]
    key = ("insert_row", model, tuple(values), db.vendor)
    found = _cache.get(key)
    if found is None:
        meta = model._meta
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        names = {f.name: f for f in fields} | {f.attname: f for f in fields}
        unknown = set(values) - set(names)
        if unknown:
            raise TypeError(f"{model.__name__} has no field {sorted(unknown)}")
        given = {names[name].attname: name for name in values}
        returning = db.features.can_return_columns_from_insert
        sql = (f"INSERT INTO {_qn(db, meta.db_table)} "
               f"({', '.join(_qn(db, f.column) for f in fields)}) "
               f"VALUES ({', '.join(['%s'] * len(fields))})")
        if returning:
            sql += f" RETURNING {_qn(db, meta.pk.column)}"
        columns = [(f, given.get(f.attname), _plain_type(f),
                    getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False))
                   for f in fields]
        found = _cache[key] = (_paramstyle(db, sql), columns, returning)
    sql, columns, returning = found
    params = []
    for field, name, plain, now in columns:
        if name is not None:
            value = values[name]
            if isinstance(value, Model):
                value = value.pk
        elif now:
            value = timezone.now()
        else:
            value = field.get_default()
        if plain is None or (value is not None and type(value) is not plain):
            value = field.get_db_prep_save(value, db)
        params.append(value)
    cursor = _execute(db, sql, params)
    return cursor.fetchone()[0] if returning else cursor.lastrowid


def select(model: type[M], *, order_by: str = "", limit: int | None = None,
           **equals: Any) -> list[M]:
    """Instances whose fields equal the given values (None: IS NULL; foreign keys by id), e.g.
    ``select(Station, modality="CT", active=True, order_by="ae_title", limit=1)``."""
    db = connections[DEFAULT_DB_ALIAS]
    names = tuple(sorted(equals))
    nulls = tuple(name for name in names if equals[name] is None)
    key = ("select", model, names, nulls, order_by, limit, db.vendor)
    found = _cache.get(key)
    if found is None:
        meta = model._meta
        where_fields = _fields_of(model, names)
        where = " AND ".join(
            f"{_qn(db, f.column)} IS NULL" if name in nulls else f"{_qn(db, f.column)} = %s"
            for name, f in zip(names, where_fields, strict=True))
        columns = ", ".join(_qn(db, f.column) for f in meta.concrete_fields)
        sql = f"SELECT {columns} FROM {_qn(db, meta.db_table)}"
        sql += f" WHERE {where}" if where else ""
        if order_by:
            column = _fields_of(model, [order_by.lstrip("-")])[0].column
            sql += f" ORDER BY {_qn(db, column)}{' DESC' if order_by.startswith('-') else ''}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        params_of = [(name, f) for name, f in zip(names, where_fields, strict=True)
                     if name not in nulls]
        found = _cache[key] = (_paramstyle(db, sql), params_of, _row_converters(db, model),
                               [f.attname for f in meta.concrete_fields])
    sql, params_of, converters, attnames = found
    params = [f.get_db_prep_value(equals[name], db, prepared=False) for name, f in params_of]
    rows = _execute(db, sql, params).fetchall()
    result = []
    for row in rows:
        values = list(row)
        for i, col, functions in converters:
            for function in functions:
                values[i] = function(values[i], col, db)
        result.append(model.from_db(db.alias, attnames, values))
    return result


def first(model: type[M], *, order_by: str = "", **equals: Any) -> M | None:
    found = select(model, order_by=order_by or "pk", limit=1, **equals)
    return found[0] if found else None


def update(obj: Model, **values: Any) -> int:
    """UPDATE the given columns of ``obj``'s row (and set them on ``obj``); fields with
    ``auto_now`` are refreshed too. The number of rows changed."""
    db = connections[DEFAULT_DB_ALIAS]
    model = type(obj)
    for name, value in values.items():
        setattr(obj, name, value)  # a foreign key by name takes an instance, by attname an id
    key = ("update", model, tuple(sorted(values)), db.vendor)
    found = _cache.get(key)
    if found is None:
        meta = model._meta
        names = sorted(set(values) | {f.name for f in meta.concrete_fields
                                      if getattr(f, "auto_now", False)})
        fields = _fields_of(model, names)
        sql = (f"UPDATE {_qn(db, meta.db_table)} SET "
               f"{', '.join(f'{_qn(db, f.column)} = %s' for f in fields)} "
               f"WHERE {_qn(db, meta.pk.column)} = %s")
        found = _cache[key] = (_paramstyle(db, sql), _preparers(fields))
    sql, preparers = found
    params = [_prepare(obj, field, attname, plain, db, False)
              for field, attname, plain in preparers]
    return _execute(db, sql, [*params, obj.pk]).rowcount


# Field classes whose pre_save reads the attribute and whose get_db_prep_save returns a value
# of this type unchanged (or None): such values skip Django's conversion calls (~80 a message).
_PLAIN = {models.CharField: str, models.TextField: str, models.IntegerField: int,
          models.PositiveIntegerField: int, models.PositiveSmallIntegerField: int,
          models.SmallIntegerField: int, models.BigIntegerField: int, models.BooleanField: bool}


def _plain_type(field: Field) -> type | None:
    if isinstance(field, models.ForeignKey) and type(field.target_field) in (
            models.AutoField, models.BigAutoField):
        return int
    return _PLAIN.get(type(field))


def _preparers(fields: list[Field]) -> list[tuple[Field, str, type | None]]:
    return [(field, field.attname, _plain_type(field)) for field in fields]


def _prepare(obj: Model, field: Field, attname: str, plain: type | None, db, add: bool) -> Any:
    if plain is not None:
        value = getattr(obj, attname)
        if value is None or type(value) is plain:
            return value
    return field.get_db_prep_save(field.pre_save(obj, add), db)


def execute(sql: str, params: Sequence[Any]):
    """Run ``sql`` (Django's ``%s`` placeholders, values already in database form) on the
    driver's cursor and return that cursor: a hot statement without the ~25 us that Django's
    cursor wrapper and its per-call placeholder rewrite cost (bench/ingest.py)."""
    db = connections[DEFAULT_DB_ALIAS]
    return _execute(db, _converted(db, sql), params)


def execute_all(batch: Sequence[tuple[str, Sequence[Any]]]) -> list:
    """``execute`` each (sql, params) of ``batch`` in order; their cursors, in the same order.

    On PostgreSQL they go in one pipeline: one network round trip for all of them (and for
    the BEGIN before them), where one at a time each waits for its answer, ~0.3-0.5 ms on
    loopback with the server on the same cores (bench/scale.py). An error in any statement
    is raised here, as ``execute`` would raise it; the rest of the batch is not run."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql":
        return [_execute(db, _converted(db, sql), params) for sql, params in batch]
    if db.connection is None:
        db.ensure_connection()
    db.validate_no_broken_transaction()
    with db.wrap_database_errors, db.connection.pipeline():
        return [_execute(db, _converted(db, sql), params) for sql, params in batch]


def _converted(db, sql: str) -> str:
    key = ("sql", sql, db.vendor)
    converted = _cache.get(key)
    if converted is None:
        converted = _cache[key] = _paramstyle(db, sql)
    return converted


def _execute(db, sql: str, params: Sequence[Any]):
    """Run on the driver's cursor inside Django's connection: the same transaction state, and
    driver errors translated to django.db's."""
    if db.connection is None:
        db.ensure_connection()
    db.validate_no_broken_transaction()
    with db.wrap_database_errors:
        if db.vendor == "postgresql":
            # Server-side binding and a statement prepared once per connection: Django's
            # psycopg cursors bind on the client, so PostgreSQL parses and plans each of a
            # C-STORE's statements anew at every store (bench/scale.py).
            if db.connection.prepare_threshold is None:  # Django's default: none prepared
                db.connection.prepare_threshold = _ONLY_WHEN_ASKED
            cursor = _server_cursor(db.connection)
            cursor.execute(sql, params, prepare=True)
        else:
            cursor = db.connection.cursor()
            cursor.execute(sql, params)
    return cursor


# psycopg prepares a statement after this many runs unless asked at once (prepare=True, as
# _execute does): in effect never, so Django's own queries stay as Django runs them
_ONLY_WHEN_ASKED = 1_000_000


def _server_cursor(connection):
    import psycopg  # only with PostgreSQL's driver

    return psycopg.Cursor(connection)


def _qn(db, name: str) -> str:
    return db.ops.quote_name(name)


def _paramstyle(db, sql: str) -> str:
    return sql.replace("%s", "?") if db.Database.paramstyle == "qmark" else sql


def _fields_of(model: type[Model], names: Sequence[str]) -> list[Field]:
    meta = model._meta
    return [meta.pk if name == "pk" else meta.get_field(name) for name in names]


def _row_converters(db, model: type[Model]) -> list[tuple[int, Any, list[Callable]]]:
    """(column index, column, converter functions) for the columns that need converting."""
    found = []
    for i, field in enumerate(model._meta.concrete_fields):
        col = field.get_col(model._meta.db_table)
        functions = [*db.ops.get_db_converters(col), *field.get_db_converters(db)]
        if functions:
            found.append((i, col, functions))
    return found
