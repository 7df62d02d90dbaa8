"""Files in and out: atomic writes, a run's outputs committed as one set, and clear errors for bad paths.

- `atomic_path` / `write_text_atomic` / `write_json_atomic`: a crash never leaves a half-written output
  behind. The temporary file is created the way `open(path, "w")` creates an ordinary file (mode 0o666
  less the umask), so colleagues and a Jupyter server running as another user can read results as they
  could read any other file.
- `output_set`: inside the block, atomic writes are staged and renamed onto their targets together when
  the block succeeds; if anything fails, every staged file is removed and no earlier output changes. A
  run's outputs (sessions + their description, splits + metadata, ...) therefore never mix two runs.
- `check_outputs`: before any work, refuse an output named twice, an output that is one of the inputs
  (resolved paths: symlinks and hard links included), an output that is a folder, or one whose folder is
  a file or not writable.
- `read_text`, `check_input_file`, `check_name`: inputs and names that are what they claim, or one line
  saying what is wrong and how to fix it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]
NEW_FILE_MODE = 0o666  # what open(path, "w") asks for; the umask takes away the rest


class InputError(ValueError):
    """An input file that exists but cannot be used as given (a folder, unreadable, not UTF-8 text)."""


class OutputError(ValueError):
    """An output path that would lose data or cannot be written (a folder, an input, named twice, read-only)."""


class _StagedOutputs:
    """Temporary files of one output set, renamed onto their targets only when the whole set is written."""

    def __init__(self) -> None:
        self.staged: dict[tuple, tuple[Path, Path]] = {}

    def add(self, target: Path, tmp: Path) -> None:
        """Stage `tmp` for `target`; the same target twice in one run is refused (the first would be lost)."""
        key = path_identity(target)
        if key in self.staged:
            tmp.unlink(missing_ok=True)
            raise OutputError(
                f"{target} is written twice in one run (also as {self.staged[key][0]}); give each output its own path"
            )
        self.staged[key] = (target, tmp)

    def commit(self) -> None:
        """Rename every staged file onto its target (renames within one folder cannot fail half-written)."""
        items = list(self.staged.values())
        self.staged.clear()
        for index, (target, tmp) in enumerate(items):
            try:
                _replace(tmp, target)
            except OutputError:
                for _, rest in items[index + 1 :]:
                    rest.unlink(missing_ok=True)
                raise

    def discard(self) -> None:
        """Remove every staged file: the targets keep what the previous run wrote."""
        for _, tmp in self.staged.values():
            tmp.unlink(missing_ok=True)
        self.staged.clear()


_ACTIVE_SET: contextvars.ContextVar[_StagedOutputs | None] = contextvars.ContextVar("output_set", default=None)


@contextlib.contextmanager
def output_set() -> Iterator[None]:
    """Stage every atomic write in the block and commit them together when it succeeds (nested blocks join)."""
    if _ACTIVE_SET.get() is not None:
        yield
        return
    staged = _StagedOutputs()
    token = _ACTIVE_SET.set(staged)
    try:
        yield
    except BaseException:
        staged.discard()
        raise
    finally:
        _ACTIVE_SET.reset(token)
    staged.commit()


def path_identity(path: PathLike) -> tuple:
    """What makes two paths the same file: (device, inode) when it exists, else the resolved path."""
    try:
        info = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", info.st_dev, info.st_ino)


def _existing_ancestor(path: Path) -> Path:
    """The nearest part of `path` that exists (the folder a new output would be created under)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def check_output_path(path: PathLike) -> Path:
    """Raise OutputError when `path` cannot become an ordinary file; no folder is created here."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target} is a folder; an output needs a file name (e.g. {target / 'out.json'})")
    ancestor = _existing_ancestor(target.parent)
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {target}: {ancestor} is a file, not a folder; choose another output folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write {target}: folder {ancestor} is not writable (permission denied); "
            "choose another output folder or fix its permissions"
        )
    return target


def check_outputs(outputs: Iterable[PathLike], inputs: Iterable[PathLike] = (), in_place: bool = False) -> None:
    """Before any work: each output once, none of them an input (unless `in_place`), each one writable.

    Paths are compared as files (symlinks resolved, hard links by inode), so `a.csv` and `./x/../a.csv`
    or a link to it count as the same file.
    """
    sources = {path_identity(p): Path(p) for p in inputs if p is not None}
    seen: dict[tuple, Path] = {}
    for output in outputs:
        if output is None:
            continue
        output = Path(output)
        key = path_identity(output)
        if key in seen:
            raise OutputError(
                f"{output} is named twice as an output (also as {seen[key]}); the second write would "
                "replace the first: give each output its own path"
            )
        if key in sources and not in_place:
            raise OutputError(
                f"output {output} is the input {sources[key]}; writing it would replace the input: "
                "choose another output path"
            )
        seen[key] = output
        check_output_path(output)


def _replace(tmp: Path, target: Path) -> None:
    """os.replace with a one-line error naming the target (a folder in the way, a vanished folder, ...)."""
    try:
        os.replace(tmp, target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {error.strerror or error}") from error


def _new_temp(target: Path) -> Path:
    """An empty file beside `target`, created like an ordinary new file (mode 0o666 less the umask)."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
        except FileExistsError:
            continue
        except OSError as error:
            raise OutputError(
                f"cannot write {target}: {error.strerror or error} in {target.parent}; choose another "
                "output folder or fix its permissions"
            ) from error
        os.close(handle)
        return tmp
    raise OutputError(f"cannot create a temporary file beside {target}")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    The temporary file lives in the same folder so the final `os.replace` is atomic on POSIX. Writers that
    take a path (pandas, matplotlib, pyarrow) write there. Inside `output_set()` the rename waits for the set.
    """
    target = check_output_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create folder {target.parent}: {error.strerror or error}") from error
    tmp = _new_temp(target)
    try:
        yield tmp
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {error.strerror or error}") from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    staged = _ACTIVE_SET.get()
    if staged is None:
        _replace(tmp, target)
    else:
        staged.add(target, tmp)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write UTF-8 text atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: PathLike, data: Any, indent: int = 2) -> Path:
    """Write JSON (UTF-8, non-ASCII kept readable) atomically and return the path."""
    return write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def check_input_file(path: PathLike, hint: str = "check the path") -> Path:
    """The path, if it names a readable file; FileNotFoundError or InputError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; pass a file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; {hint}")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied; fix its permissions or copy it somewhere readable")
    return path


def decode_error(path: PathLike, error: UnicodeDecodeError) -> InputError:
    """The one-line error for a file that is not UTF-8 (a latin-1 export, a binary file under a text name)."""
    byte = error.object[error.start : error.start + 1].hex()
    return InputError(
        f"{path}: not UTF-8 text (byte 0x{byte} at offset {error.start}); save it as UTF-8, e.g. "
        f"`iconv -f latin1 -t utf-8 {path} > utf8_{Path(path).name}`"
    )


def read_text(path: PathLike, hint: str = "check the path") -> str:
    """A UTF-8 text file (a leading byte-order mark, as Excel and Notepad write, is dropped)."""
    path = check_input_file(path, hint)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise decode_error(path, error) from error
    except OSError as error:
        raise InputError(f"{path}: {error.strerror or error}") from error


def check_name(name: str, what: str = "--name") -> str:
    """A name that becomes part of a file name: no folders, no `..`, nothing hidden, nothing empty."""
    text = str(name)
    if (
        not text.strip()
        or text in (".", "..")
        or "/" in text
        or "\\" in text
        or "\0" in text
        or text.startswith(("-", "."))
    ):
        raise OutputError(
            f"{what} {text!r} is not a plain name (no '/', '\\', leading '.' or '-'); it names files "
            "inside the output folder: use e.g. BGL"
        )
    return text
