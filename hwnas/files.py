"""Written files appear whole or not at all: each is written to a temporary file beside its
target and renamed over it (atomic on POSIX), so a crash, a kill or a full disk never leaves a
torn or empty file where a good one was."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix: writers pick the format from it),
    renamed over ``path`` when the block succeeds and removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would differ from a plain write's mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` that replaces ``path`` whole when the block
    succeeds (the old folder is removed only then) and is removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    """Indented JSON; NaN and infinities are refused (they are not JSON)."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


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
