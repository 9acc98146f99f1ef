"""trainers/fileio.py: the one atomic write every file and checkpoint goes through."""

import os
from pathlib import Path

import pytest

from trainers.fileio import atomic_write, temporary_name, write_text, writer_pid


class Midway(RuntimeError):
    pass


def half_then_fail(tmp: Path) -> None:
    tmp.write_text("half of the new")
    raise Midway


def test_success_replaces_the_file_and_leaves_only_it(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("old")
    seen = []
    assert atomic_write(path, lambda tmp: (seen.append(tmp), tmp.write_text("new"))) == path
    assert path.read_text() == "new"
    assert seen == [tmp_path / f".run.json.tmp-{os.getpid()}"]  # the name trainers/data/idd.py's cleaner looks for
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_write_that_raises_midway_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("old")
    with pytest.raises(Midway):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_write_that_raises_before_any_file_exists_leaves_nothing(tmp_path):
    with pytest.raises(Midway):
        atomic_write(tmp_path / "new.json", half_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_the_target_never_holds_partial_content(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("old")

    def write(tmp: Path) -> None:
        with tmp.open("w") as f:
            f.write("new ")
            f.flush()
            assert path.read_text() == "old"  # mid-write, a reader still sees the whole old file
            f.write("content")

    atomic_write(path, write)
    assert path.read_text() == "new content"


def test_a_directory_replaces_a_directory_whole(tmp_path):
    target = tmp_path / "checkpoint_000010"
    target.mkdir()
    (target / "stale.pt").write_text("old")

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "state.pt").write_text("new")

    atomic_write(target, write)
    assert sorted(p.name for p in target.iterdir()) == ["state.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_000010"]


def test_a_directory_write_that_fails_keeps_the_old_directory_and_no_temporary(tmp_path):
    target = tmp_path / "checkpoint_000010"
    target.mkdir()
    (target / "state.pt").write_text("old")

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "state.pt").write_text("half")
        raise Midway

    with pytest.raises(Midway):
        atomic_write(target, write)
    assert (target / "state.pt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_000010"]


def test_a_temporary_left_by_a_killed_writer_with_this_pid_is_replaced(tmp_path):
    path = tmp_path / "checkpoint_000010"
    leftover = temporary_name(path)
    leftover.mkdir()
    (leftover / "junk").write_text("from a killed process that had our pid")
    atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and not leftover.exists()


def test_write_text_is_utf8(tmp_path):
    write_text(tmp_path / "report.md", "ÿ • traffic light")
    assert (tmp_path / "report.md").read_bytes() == "ÿ • traffic light".encode()


@pytest.mark.parametrize(("name", "pid"), [(".x.png.tmp-123", 123), (".x.png.tmp-", None), ("x.png", None),
                                           (".x.png.tmp-12a", None), ("x.png.tmp-123", None)])
def test_writer_pid_reads_the_temporary_names_pid(name, pid):
    assert writer_pid(Path(name)) == pid
