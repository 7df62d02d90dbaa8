"""rationanomaly.io: atomic writes with ordinary permissions, output sets, path checks, names."""

from __future__ import annotations

import json
import os
import stat

import pytest

from rationanomaly.io import (
    InputError,
    OutputError,
    atomic_path,
    check_name,
    check_outputs,
    output_set,
    read_text,
    write_json_atomic,
    write_text_atomic,
)


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (0o022, 0o644),  # the usual umask: readable by the group and others (a Jupyter server as another user)
        (0o027, 0o640),  # a stricter site umask is honoured, not overridden
        (0o002, 0o664),  # a shared group folder
    ],
)
def test_atomic_writes_get_the_mode_the_umask_gives_an_ordinary_file(tmp_path, umask, mask, expected):
    umask(mask)
    write_text_atomic(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")  # writers that take a path (pandas, pyarrow) open the temporary file like this
    with open(tmp_path / "plain.txt", "w") as handle:  # what an ordinary new file gets
        handle.write("x")
    assert (mode(tmp_path / "a.txt"), mode(tmp_path / "b.bin"), mode(tmp_path / "plain.txt")) == (expected,) * 3


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    write_text_atomic(tmp_path / "out.json", "old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk on fire")
    assert (tmp_path / "out.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_an_output_set_commits_every_file_or_none(tmp_path):
    for name in ("a.json", "b.json"):
        write_json_atomic(tmp_path / name, "run 1")
    with pytest.raises(RuntimeError, match="second write failed"):
        with output_set():
            write_json_atomic(tmp_path / "a.json", "run 2")
            assert json.loads((tmp_path / "a.json").read_text()) == "run 1"  # staged, not yet visible
            raise RuntimeError("second write failed")
    assert [json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json")] == ["run 1", "run 1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # staged files removed
    with output_set():
        write_json_atomic(tmp_path / "a.json", "run 3")
        write_json_atomic(tmp_path / "b.json", "run 3")
    assert [json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json")] == ["run 3", "run 3"]


def test_an_output_set_refuses_the_same_file_twice(tmp_path):
    write_json_atomic(tmp_path / "a.json", "before")
    with pytest.raises(OutputError, match="is written twice in one run"):
        with output_set():
            write_json_atomic(tmp_path / "a.json", 1)
            write_json_atomic(tmp_path / "sub" / ".." / "a.json", 2)
    assert json.loads((tmp_path / "a.json").read_text()) == "before"


def test_check_outputs_refuses_duplicates_inputs_links_and_folders(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("x")
    (tmp_path / "link.csv").symlink_to(source)
    os.link(source, tmp_path / "hard.csv")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    cases = [
        ([tmp_path / "o.csv", tmp_path / "x" / ".." / "o.csv"], "is named twice as an output"),
        ([source], "is the input"),
        ([tmp_path / "link.csv"], "is the input"),  # a symlink to the input
        ([tmp_path / "hard.csv"], "is the input"),  # a hard link: the same file
        ([tmp_path / "folder"], "is a folder"),
        ([tmp_path / "file" / "o.csv"], "is a file, not a folder"),
    ]
    for outputs, message in cases:
        with pytest.raises(OutputError, match=message):
            check_outputs(outputs, [source])
    check_outputs([source], [source], in_place=True)  # explicitly allowed
    check_outputs([tmp_path / "new" / "deep" / "o.csv", None], [source, None])


def test_check_outputs_refuses_a_folder_that_is_not_writable(tmp_path, monkeypatch):
    # root may write anywhere, so the refusal is shown through os.access (what the check asks)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match=r"folder .* is not writable \(permission denied\)"):
        check_outputs([tmp_path / "o.json"])


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "", " ", ".hidden", "-x", "a\\b"])
def test_check_name_refuses_anything_but_a_plain_name(name):
    with pytest.raises(OutputError, match="is not a plain name"):
        check_name(name)


def test_check_name_keeps_plain_names():
    assert [check_name(n) for n in ("BGL", "Spirit_v2", "bgl.2k")] == ["BGL", "Spirit_v2", "bgl.2k"]


def test_read_text_names_what_is_wrong(tmp_path):
    (tmp_path / "latin.json").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf[1]")
    with pytest.raises(InputError, match=r"latin.json: not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_text(tmp_path / "latin.json")
    with pytest.raises(InputError, match="is a folder; pass a file"):
        read_text(tmp_path)
    with pytest.raises(FileNotFoundError, match="none.json: no such file"):
        read_text(tmp_path / "none.json")
    assert read_text(tmp_path / "bom.json") == "[1]"  # Excel's byte-order mark dropped
