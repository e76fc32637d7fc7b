"""Written files appear whole or not at all: each is written to a temporary file beside its
target and renamed over it (atomic on POSIX), so a crash, a kill or a full disk never leaves a
torn or empty file where a good one was.

A write that fails (a full disk, a read-only folder, no permission) raises ``WriteError``
naming the target; the previous file is left as it was. JSON is written and printed without
NaN or infinities (they are not JSON): ``dumps`` names the value that is not finite."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from hwnas.errors import UserError


class WriteError(UserError):
    """A file or folder that could not be written; the message names it."""


class NotFiniteError(UserError):
    """A result that is not a finite number where JSON needs one; the message names it."""


@contextlib.contextmanager
def _named(path: Path) -> Iterator[None]:
    """OSError (ENOSPC, EROFS, EACCES...) as a WriteError naming ``path``."""
    try:
        yield
    except OSError as err:
        raise WriteError(f"{path}: cannot write: {err.strerror or err}") from None


def _is_stream(path: Path) -> bool:
    """A character device, FIFO or socket (``/dev/stdout``): written in place, not replaced."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def temporary(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: a fixed name beside it
    (with its suffix: writers pick the format from it), so what a kill leaves there is
    replaced by the next write instead of piling up."""
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix: writers pick the format from it),
    renamed over ``path`` when the block succeeds and removed when it fails. A device or
    pipe (``/dev/stdout``) is written directly."""
    path = Path(path)
    with _named(path):
        if _is_stream(path):
            yield path
            return
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary(path)
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` that replaces ``path`` whole when the block
    succeeds (the old folder is removed only then) and is removed when it fails."""
    with staged() as out:
        yield out.dir(path)


class Outputs:
    """A stage's outputs, prepared beside their targets by ``staged`` (see there)."""

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []  # (temporary, target)
        self._dirs: list[tuple[Path, Path]] = []

    def path(self, target: str | os.PathLike) -> Path:
        """Where to write ``target`` (same suffix: writers pick the format from it)."""
        target = Path(target)
        with _named(target):
            if target.is_dir():
                raise IsADirectoryError(21, "is a directory")
            target.parent.mkdir(parents=True, exist_ok=True)
        self._files.append((temporary(target), target))
        return temporary(target)

    def dir(self, target: str | os.PathLike) -> Path:
        """A fresh, empty folder to fill in place of the folder ``target``."""
        target = Path(target)
        tmp = temporary(target)
        with _named(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        self._dirs.append((tmp, target))
        return tmp

    def text(self, target: str | os.PathLike, text: str) -> None:
        tmp = self.path(target)
        with _named(Path(target)):
            tmp.write_text(text)

    def json(self, target: str | os.PathLike, obj) -> None:
        """Indented JSON; NaN and infinities are refused, naming ``target`` and the key."""
        self.text(target, dumps(obj, indent=2, what=str(target)) + "\n")

    def _commit(self) -> None:
        for tmp, target in self._dirs:
            with _named(target):
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                if target.exists():
                    os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
        for tmp, target in self._files:
            with _named(target):
                os.replace(tmp, target)

    def _discard(self) -> None:
        for tmp, _ in self._dirs:
            shutil.rmtree(tmp, ignore_errors=True)
        for tmp, _ in self._files:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged() -> Iterator[Outputs]:
    """A stage's outputs as one: each is written to its temporary beside its target, and
    all are renamed into place only when the whole block succeeds. A failure anywhere (a
    NaN in the last file, a full disk, a tracking error) leaves every previous output as it
    was; only the renames, which cannot run out of space, come after the last write."""
    outputs = Outputs()
    try:
        yield outputs
        outputs._commit()
    finally:
        outputs._discard()


def _not_finite(obj, where: str = "") -> tuple[str, float] | None:
    """The first non-finite float in ``obj`` and where it is (``rows[2].latency_ms``)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where, obj)
    items = (obj.items() if isinstance(obj, dict) else
             enumerate(obj) if isinstance(obj, (list, tuple)) else ())
    for key, value in items:
        sub = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        if found := _not_finite(value, sub):
            return found
    return None


def dumps(obj, indent: int | None = None, what: str = "the result") -> str:
    """``json.dumps`` that refuses NaN and infinities, naming the first one found."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:
        where, value = _not_finite(obj) or ("a value", float("nan"))
        name = obj.get("name") if isinstance(obj, dict) else None
        raise NotFiniteError(f"{what}{f' ({name})' if name else ''}: {where} is {value}, "
                             "not a finite number (it overflowed or is undefined)") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    """Indented JSON; NaN and infinities are refused (they are not JSON)."""
    write_text(path, dumps(obj, indent=2, what=str(path)) + "\n")


def read_table(path: str | os.PathLike, columns: dict[str, str], missing: str,
               error: type[Exception] = UserError):
    """A parquet table that a stage reads, checked before use: ``missing`` (naming what
    writes it) when absent, then an unreadable file, a missing column, a column of the
    wrong kind (``columns``: name -> ``"number"``, ``"text"`` or ``"any"``), NaN or
    infinities in a number column, or no rows, each an ``error`` naming the file."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise error(f"{path}: not a readable parquet table: {err}") from None
    for name, kind in columns.items():
        if name not in table.columns:
            raise error(f"{path}: the table lacks column '{name}'")
        col = table[name]
        if kind == "number" and not (pd.api.types.is_numeric_dtype(col)
                                     and np.isfinite(col.to_numpy(dtype=float)).all()):
            raise error(f"{path}: column '{name}' must hold finite numbers")
        if kind == "text" and not col.map(lambda v: isinstance(v, str)).all():
            raise error(f"{path}: column '{name}' must hold text")
    if table.empty:
        raise error(f"{path}: the table has no rows")
    return table


def read_journal(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines journal (one line appended per finished piece of work).
    A last line torn by a kill is dropped, and the file rewritten without it, so the next
    append starts on a line of its own."""
    path = Path(path)
    if not path.exists():
        return []
    text, rows = path.read_text(), []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    whole = "".join(json.dumps(r) + "\n" for r in rows)
    if len(rows) != len(text.splitlines()) or not text.endswith("\n") and text:
        write_text(path, whole)
    return rows


def append_journal(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append records to a journal, one JSON line each, flushed to the OS at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
