"""Reading and writing row tables for the ``pairrm`` command: JSONL, JSON, CSV, Parquet and ``datasets``.

Readers return a :class:`Table`: the rows as dicts (input order), a location per row (``line 3`` for line-based
files, ``row 2`` otherwise) used in error messages, and the rows that could not even be parsed (malformed JSON,
bytes that are not UTF-8) as :class:`RowProblem` records. Writers pick the format from the output's extension and
replace the output atomically (temporary file in the same folder + ``os.replace``).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FORMATS",
    "InputError",
    "RowProblem",
    "Table",
    "detect_format",
    "read_table",
    "write_rows",
    "atomic_write_text",
    "input_fingerprint",
    "content_fingerprint",
    "check_output_path",
    "require_extra",
    "decode_csv_lists",
    "output_problems",
    "FILE_FORMATS",
]

#: File formats by extension; anything else that is a folder is read with ``datasets.load_from_disk``.
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class InputError(ValueError):
    """Bad input data or arguments; the ``pairrm`` command exits with status 2."""


#: Optional packages by import name: the pip extra that installs them.
_EXTRAS = {"pyarrow": "cli", "datasets": "cli"}


def require_extra(module: str, purpose: str) -> None:
    """Import ``module`` now (before any compute) or raise :class:`InputError` naming the extra that installs it."""
    try:
        __import__(module)
    except ImportError:
        extra = _EXTRAS.get(module, "cli")
        raise InputError(
            f"{purpose} needs the optional package {module!r}, which is not installed; "
            f'install it with: pip install "pairrm-hf[{extra}]"'
        ) from None


@dataclass
class RowProblem:
    """A row that cannot be used: its index in the input (or -1 when it never became a row), where it is, why."""

    index: int
    location: str
    reason: str
    raw: Any = None


@dataclass
class Table:
    """Rows of one input in order, with a human location per row and the rows that failed to parse."""

    name: str
    rows: list[dict]
    locations: list[str]
    problems: list[RowProblem] = field(default_factory=list)
    #: the reader's format (``jsonl``, ``json``, ``csv``, ``parquet``, ``dataset``); only CSV cells are text-only.
    format: str = ""
    #: ``datasets``' fingerprint of a loaded Hub dataset split (files and folders are hashed instead).
    fingerprint: str | None = None
    #: the hash of the bytes the rows were parsed from (a file), or of the folder as it was read; None for a Hub id.
    content: str | None = None


def detect_format(path: str | os.PathLike) -> str:
    """``jsonl``/``json``/``csv``/``parquet`` from the extension, ``dataset`` for a folder or a Hub dataset id."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in FORMATS:
        return FORMATS[ext]
    if os.path.isdir(path) or not os.path.exists(path):
        return "dataset"
    raise InputError(f"{path}: unknown file type {ext!r}; use one of {sorted(FORMATS)} or a datasets folder")


def _decode_lines(data: bytes) -> Iterable[tuple[int, str | None, str | None]]:
    """``(line number, text, error)`` per non-blank line; a line that is not UTF-8 gives an error, not a crash."""
    for number, raw in enumerate(io.BytesIO(data), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield number, None, f"not valid UTF-8 (byte {err.start}: {raw[err.start : err.start + 1]!r})"
            continue
        if text.strip():
            yield number, text, None


def _parse_json_line(text: str) -> tuple[Any, str | None]:
    """``(value, error)`` of one JSONL line; nesting too deep for Python's parser is an error of that line."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        return None, f"malformed JSON ({err.msg} at column {err.colno})"
    except RecursionError:
        return None, "JSON nested too deeply to read"


def _read_jsonl(data: bytes, path: str, limit: int | None) -> Table:
    table = Table(path, [], [])
    for number, text, error in _decode_lines(data):
        if limit is not None and len(table.rows) >= limit:
            break
        index = len(table.rows)
        if error is None:
            row, error = _parse_json_line(text)
            if error is None and not isinstance(row, dict):
                error = f"expected a JSON object, got {type(row).__name__}"
        if error is not None:
            # Keep the slot so row indices (and chunk boundaries) do not depend on which rows are bad.
            table.problems.append(RowProblem(index, f"line {number}", error, text))
            table.rows.append({})
            table.locations.append(f"line {number}")
            continue
        table.rows.append(row)
        table.locations.append(f"line {number}")
    return table


def _read_text(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: not valid UTF-8 (byte {err.start})") from None


def _columns_to_rows(data: dict, path: str) -> list[dict]:
    """Column-oriented JSON (``{"prompt": [...], "candidates": [...]}``, as pandas/datasets may write it) as rows;
    columns of different lengths are an error (padding them would invent nulls, truncating would lose rows)."""
    lengths = {k: len(v) for k, v in data.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k!r}: {n}" for k, n in lengths.items())
        raise InputError(
            f"{path}: column-oriented JSON with columns of different lengths ({listed}); every column must hold "
            "one value per row"
        )
    n = next(iter(lengths.values()))
    return [{k: v[i] for k, v in data.items()} for i in range(n)]


def _read_json(data: bytes, path: str, limit: int | None) -> Table:
    try:
        data = json.loads(_read_text(data, path))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: line {err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read") from None
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()) and data:
        data = _columns_to_rows(data, path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    data = data[:limit] if limit is not None else data
    table = Table(path, [], [])
    for i, row in enumerate(data):
        table.locations.append(f"row {i}")
        if not isinstance(row, dict):
            table.problems.append(RowProblem(i, f"row {i}", f"expected a JSON object, got {type(row).__name__}", row))
            row = {}
        table.rows.append(row)
    return table


def _read_csv(data: bytes, path: str, limit: int | None) -> Table:
    text = _read_text(data, path)
    # The csv module caps a cell at 131,072 characters by default; a long answer is a normal cell. Lift the cap
    # for this read only (it is process-wide), to the longest cell this text can hold.
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, len(text)))
    try:
        return _csv_rows(csv.DictReader(io.StringIO(text, newline="")), path, limit)
    except csv.Error as err:
        raise InputError(f"{path}: cannot read CSV: {err}") from None
    finally:
        csv.field_size_limit(previous)


def _csv_rows(reader: csv.DictReader, path: str, limit: int | None) -> Table:
    table = Table(path, [], [])
    for row in reader:
        if limit is not None and len(table.rows) >= limit:
            break
        location = f"line {reader.line_num}"
        if None in row:
            # csv.DictReader files the cells beyond the header under the key None: they have no column to go to.
            extra = row.pop(None)
            reason = (
                f"{len(reader.fieldnames) + len(extra)} cells but the header has {len(reader.fieldnames)} columns "
                f"(extra: {extra[:3]!r}); quote cells that contain the delimiter"
            )
            table.problems.append(RowProblem(len(table.rows), location, reason, row))
        table.rows.append(dict(row))
        table.locations.append(location)
    return table


def _records(dataset, name: str, limit: int | None) -> Table:
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    rows = dataset.to_list() if hasattr(dataset, "to_list") else dataset.to_pylist()
    return Table(name, rows, [f"row {i}" for i in range(len(rows))])


def read_table(path: str | os.PathLike, *, split: str | None = None, limit: int | None = None) -> Table:
    """Read an input into a :class:`Table` (the first ``limit`` rows when given).

    ``path``: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, a folder saved with ``Dataset.save_to_disk``
    (a ``DatasetDict`` needs ``split``) or a Hub dataset id (needs ``split``; loaded with ``datasets.load_dataset``).

    A file is read once, and :attr:`Table.content` is the hash of exactly the bytes that were parsed, so an edit
    made while a job starts can never be recorded as the content of rows that were read before it. A folder is
    hashed before and after it is read; a change in between is an error.
    """
    path = os.fspath(path)
    kind = detect_format(path)
    if kind in FILE_FORMATS:
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file")
        with open(path, "rb") as f:
            data = f.read()
        table = _parse_bytes(data, path, kind, limit)
        table.content = hashlib.blake2b(data, digest_size=16).hexdigest()
    elif os.path.isdir(path):
        before = content_fingerprint(path)
        table = _read_dataset(path, split, limit)
        if content_fingerprint(path) != before:
            raise InputError(f"{path}: changed while it was being read; rerun when nothing writes to it")
        table.content = before
    else:
        table = _read_dataset(path, split, limit)
    table.format = kind
    return table


#: The formats read from one file's bytes (the others are ``datasets`` folders or Hub ids).
FILE_FORMATS = ("jsonl", "json", "csv", "parquet")


def _parse_bytes(data: bytes, path: str, kind: str, limit: int | None) -> Table:
    if kind == "jsonl":
        return _read_jsonl(data, path, limit)
    if kind == "json":
        return _read_json(data, path, limit)
    if kind == "csv":
        return _read_csv(data, path, limit)
    require_extra("pyarrow", f"reading {path}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return _records(pq.read_table(pa.BufferReader(data)), path, limit)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise InputError(f"{path}: cannot read Parquet: {err}") from None


def _read_dataset(path: str, split: str | None, limit: int | None) -> Table:
    require_extra("datasets", f"reading {path} (a datasets folder or Hub dataset id)")
    import datasets

    if os.path.isdir(path):
        data = datasets.load_from_disk(path)
    else:
        if split is None:
            raise InputError(f"{path}: no such file; for a Hub dataset id pass --split")
        data = datasets.load_dataset(path, split=split)
    if isinstance(data, datasets.DatasetDict):
        if split is None or split not in data:
            raise InputError(f"{path}: a DatasetDict; pass --split (one of {sorted(data)})")
        data = data[split]
    table = _records(data, path, limit)
    table.fingerprint = getattr(data, "_fingerprint", None)
    return table


#: Bytes read per step of :func:`content_fingerprint` (1 MiB: large enough that hashing, not Python, sets the pace).
_HASH_BLOCK = 1 << 20


def _hash_file(h, path: str) -> None:
    buf = bytearray(_HASH_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])


def content_fingerprint(path: str | os.PathLike) -> str:
    """A hash of what a file or folder holds (every byte; names and sizes for a folder), never of its mtime.

    One streaming ``blake2b`` pass: about 1 GB/s on one CPU core, several times faster than parsing the same
    bytes as JSON, so fingerprinting a multi-GB input adds a small fraction to reading it (see
    ``benchmarks/fingerprint.py``). A sampled hash would be cheaper still, but would miss an edit between samples.
    """
    path = os.fspath(path)
    h = hashlib.blake2b(digest_size=16)
    if os.path.isfile(path):
        _hash_file(h, path)
        return h.hexdigest()
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            h.update(f"{os.path.relpath(full, path)}\0{os.path.getsize(full)}\0".encode())
            _hash_file(h, full)
    return h.hexdigest()


def input_fingerprint(path: str | os.PathLike, split: str | None = None, table: Table | None = None) -> dict:
    """What identifies an input's content for resuming: a content hash of a file or folder; for a Hub dataset id,
    ``datasets``' own fingerprint of the loaded split (taken from ``table`` when given). With a ``table`` from
    :func:`read_table`, the hash of the bytes its rows were parsed from."""
    path = os.fspath(path)
    if table is not None and table.content is not None:
        return {"content": table.content, "split": split}  # the bytes the rows came from, not a second read
    if os.path.exists(path):
        return {"content": content_fingerprint(path), "split": split}
    return {"dataset": path, "split": split, "fingerprint": getattr(table, "fingerprint", None)}


def _write_error(path: str, err: OSError) -> OSError:
    """The same error, with the path being written and what to do (disk full, quota, permissions)."""
    hint = ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "; free some space (or pick another output folder) and rerun the same command"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; choose an output folder you can write to"
    return type(err)(err.errno, f"cannot write {path}: {err.strerror or err}{hint}")


def _open_tmp(path: str, make_dirs: bool) -> tuple[int, str]:
    """A new temporary file next to ``path``. Created with mode 0o666, so the umask decides its permissions
    (``tempfile.mkstemp`` would make every output 0600)."""
    folder = os.path.dirname(os.path.abspath(path))
    if make_dirs:
        os.makedirs(folder, exist_ok=True)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _atomic_write(path: str, write, make_dirs: bool = True) -> None:
    try:
        fd, tmp = _open_tmp(path, make_dirs)
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno is not None:
            raise _write_error(path, err) from err
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, make_dirs: bool = True) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The file gets the umask's permissions; a failed write (disk full, …) raises an ``OSError`` naming ``path``.
    ``make_dirs=False`` fails instead of creating a missing folder.
    """
    data = text.encode("utf-8")
    _atomic_write(os.fspath(path), lambda f: f.write(data), make_dirs)


def check_output_path(path: str | os.PathLike) -> str:
    """The output format of ``path``; raises :class:`InputError` before any compute when the extension is unknown
    or its writer's package is missing."""
    path = os.fspath(path)
    kind = FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise InputError(f"{path}: unknown output type; use one of {sorted(FORMATS)}")
    if kind == "parquet":
        require_extra("pyarrow", f"writing {path}")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder; the output must be a file")
    return kind


def decode_csv_lists(table: Table, list_columns: Iterable[str], chat_columns: Iterable[str] = ()) -> None:
    """CSV cells are text, so lists arrive as JSON text: decode them, in place, only where a list is expected.

    ``list_columns`` hold lists (candidates): a cell that parses as a JSON list becomes that list.
    ``chat_columns`` hold a str or a chat (a list of ``{"role", "content"}`` messages): a cell becomes a list
    only when it parses as such a chat, so a text like ``"[3, 1, 2]"`` stays text. Other formats keep their
    strings untouched (there a string is a string).
    """
    if table.format != "csv":
        return
    list_columns, chat_columns = set(list_columns), set(chat_columns)
    for row in table.rows:
        for column in list_columns | chat_columns:
            value = row.get(column)
            if not isinstance(value, str) or value.lstrip()[:1] != "[":
                continue
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                continue
            is_chat = (
                isinstance(decoded, list)
                and bool(decoded)
                and all(isinstance(m, dict) and "role" in m for m in decoded)
            )
            if (column in list_columns and isinstance(decoded, list)) or is_chat:
                row[column] = decoded


def _csv_cell(value: Any) -> Any:
    # Lists and dicts (candidates, scores, messages) go into CSV cells as JSON, which the reader parses back.
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict, tuple)) else value


def write_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write rows to ``path`` in the format of its extension, atomically. Column order: first row's, then new ones."""
    path = os.fspath(path)
    kind = check_output_path(path)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    if kind == "jsonl":
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    elif kind == "json":
        atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    elif kind == "csv":
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        atomic_write_text(path, buf.getvalue())
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
        _atomic_write(path, lambda f: pq.write_table(table, f))


#: Row problems one Parquet column may report before the column as a whole is called unwritable.
_MAX_COLUMN_PROBLEMS = 20


def _unwritable_text(value: Any) -> str | None:
    """Why ``value`` cannot go into a UTF-8 JSON/CSV output, or None."""
    try:
        json.dumps(value, ensure_ascii=False, default=repr).encode("utf-8")
    except UnicodeEncodeError as err:
        return f"holds a lone surrogate code point ({err.object[err.start : err.end]!r}), which UTF-8 cannot write"
    except RecursionError:
        return "is nested too deeply to write"
    except (TypeError, ValueError) as err:
        return f"cannot be written as JSON ({err})"
    return None


def _text_problems(table: Table, keep: list[int]) -> list[RowProblem]:
    problems = []
    for i in keep:
        for column, value in table.rows[i].items():
            reason = _unwritable_text(column) or _unwritable_text(value)
            if reason is not None:
                problems.append(RowProblem(i, table.locations[i], f"field {column!r}: {reason}", table.rows[i]))
                break
    return problems


def _arrow_reason(values: list) -> str | None:
    """Why these values cannot form one Parquet column, or None."""
    import pyarrow as pa

    try:
        pa.array(values)
    except OverflowError:
        return "an integer too large for Parquet's 64-bit integers (store it as a string)"
    except UnicodeEncodeError as err:
        return f"holds a lone surrogate code point ({err.object[err.start : err.end]!r}), which UTF-8 cannot write"
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        return f"cannot be stored in Parquet ({err}); a Parquet column holds one type"
    return None


def _first_bad(values: list) -> int:
    """The index of the first value that makes the column unwritable (the shortest failing prefix)."""
    low, high = 0, len(values)  # values[:low] converts, values[:high] does not
    while high - low > 1:
        mid = (low + high) // 2
        if _arrow_reason(values[:mid]) is None:
            low = mid
        else:
            high = mid
    return high - 1


def _parquet_problems(table: Table, keep: list[int], path: str) -> list[RowProblem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    problems = []
    columns: dict[str, None] = {}
    for i in keep:
        columns.update(dict.fromkeys(table.rows[i]))
    bad: set[int] = set()
    for column in columns:
        found = 0
        while True:
            rows = [i for i in keep if i not in bad]
            values = [table.rows[i].get(column) for i in rows]
            if _arrow_reason(values) is None:
                break
            k = _first_bad(values)
            reason = _arrow_reason(values[: k + 1])
            if found == _MAX_COLUMN_PROBLEMS:
                raise InputError(
                    f"{table.name}: column {column!r} cannot be written to {path}: {reason} (more than "
                    f"{_MAX_COLUMN_PROBLEMS} rows; first: {problems[-found].location}); write a .jsonl output instead"
                )
            i = rows[k]
            problems.append(RowProblem(i, table.locations[i], f"field {column!r}: {reason}", table.rows[i]))
            bad.add(i)
            found += 1
        rows = [i for i in keep if i not in bad]
        try:
            schema = pa.table({column: pa.array([table.rows[i].get(column) for i in rows])}).schema
            pq.ParquetWriter(pa.MockOutputStream(), schema).close()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            # A type Parquet has no form for (an object with no keys: ``{}``) is the column's, not one row's.
            raise InputError(
                f"{table.name}: column {column!r} cannot be written to {path} ({err}); drop or fill that column, "
                "or write a .jsonl output"
            ) from None
    return problems


def output_problems(path: str | os.PathLike, table: Table, skip: Iterable[int] = ()) -> list[RowProblem]:
    """Check, before any compute, that the rows of ``table`` (but ``skip``) can be written to ``path``'s format.

    Returns the rows that cannot (lone surrogates in any column for every format; for Parquet also integers beyond
    64 bits and values whose type differs from the column's earlier rows), each naming its field. Raises
    :class:`InputError` for a Parquet column that cannot be written at all (every value ``{}``) or that mixes types
    in too many rows. The columns a task adds are numbers and lists of them, so the input's columns are what can fail.
    """
    path = os.fspath(path)
    kind = check_output_path(path)
    skip = set(skip)
    keep = [i for i in range(len(table.rows)) if i not in skip]
    if kind == "parquet":
        return _parquet_problems(table, keep, path)
    return _text_problems(table, keep)
