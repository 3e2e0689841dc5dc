"""Small file helpers: atomic whole-file writes, fsynced JSONL appends that leave no torn tail when a write
fails (a full disk), JSONL reads that survive a torn last line (what a killed process leaves behind) and a
corrupt line (skipped with a warning naming file and line), and the guard that keeps an earlier run's outputs."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from mcts_cot.errors import UserError

log = logging.getLogger(__name__)

_UMASK = os.umask(0o022)  # reading the umask means setting it: read once at import and set straight back
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write a whole file through a temp file and a rename, so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; a data file should be as readable as any other
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    write_atomic(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Append rows and fsync, so a crash loses at most the line being written. A failed write (disk full,
    file-size limit) is cut back to the file as it was, so the rows are written whole or not at all."""
    data = b"".join(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in rows)
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:  # unbuffered, so nothing is left to be flushed after a failure
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # truncating frees space, so it works on a full disk
            raise
    finally:
        os.close(fd)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of every complete JSON line. A torn (unterminated) last line is skipped; so is a
    corrupt line (bad JSON or bytes), with a warning naming file and line, so one bad line loses one record."""
    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                return
            if not line.strip():
                continue
            try:
                yield line_no, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                log.warning("%s: line %d is not valid JSON (%s, column %d); skipped", path, line_no, exc.msg, exc.colno)


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of `iter_jsonl`."""
    return (record for _, record in iter_jsonl(path))


def claim_out_dir(out: str | Path, outputs: Iterable[str], overwrite: bool, command: str) -> None:
    """Refuse an out dir that holds any of `outputs` from an earlier run, unless `overwrite`: a second run
    must not silently replace the first one's data, model or report."""
    found = [name for name in outputs if (Path(out) / name).exists()]
    if found and not overwrite:
        raise UserError(f"{out}: holds the outputs of an earlier `{command}` ({', '.join(found)}); "
                        "use another --out, or --overwrite to replace them")


def repair_jsonl(path: str | Path) -> int:
    """Cut a torn last line off a JSONL file in place; returns the number of bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    raw = path.read_bytes()
    keep = raw.rfind(b"\n") + 1
    if keep == len(raw):
        return 0
    with open(path, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return len(raw) - keep
