"""Output safety of run directories (issue 21): ``--force`` removes only advlab runs, links are never followed
(``--out``, ``OUT.partial``, ``LOCK``, the file ``atomic_write`` writes), a run's lock is taken over atomically,
and names the OS cannot use are one line. Each case checks the state on disk with ``os.lstat``."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advlab.errors import AdvlabError
from advlab.runs import RunExists, atomic_write, check_writable, start
from advlab.runs import lock as runlock
from advlab.runs.lock import LOCK_FILE, RunInUse
from tests.cli.helpers import run_cli


def _tree(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every path under ``root`` (links not followed) with its mode, inode, size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _one_line(rc: int, err: str, *words: str) -> None:
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def _attack(out: Path | str, *flags: str) -> list[str]:
    cheap = ["--model", "digits-cnn", "--data", "digits:test", "--limit", "8", "--attack", "fgsm", "--eps", "0.1"]
    return ["attack", *cheap, "--out", str(out), "--quiet", *flags]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lock_naming(partial: Path, pid: int, host: str | None = None, **extra: object) -> None:
    partial.mkdir(exist_ok=True)
    (partial / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), **extra}))


# ------------------------------------------------------------------------------------------ --force
def test_force_never_removes_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "keep.txt").write_text("keep")
    before = _tree(tmp_path)
    for flags in ({"force": True}, {"resume": True}, {}):
        with pytest.raises(RunExists, match=r"'.*mydocs' is not an advlab run .*1 entry: 'keep.txt'.*will not remove"):
            with start(docs, {"v": 1}, **flags):  # type: ignore[arg-type]
                pass
    assert _tree(tmp_path) == before


def test_force_replaces_a_run_and_an_old_advlab_run_and_an_empty_directory(tmp_path: Path) -> None:
    with start(tmp_path / "run", {"v": 1}) as run:
        run.save_text("old.txt", "old")
    old = tmp_path / "old"  # made by an older advlab: config.json with "versions", no "started"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"command": "advlab x", "versions": {"advlab": "0.1"}}))
    (tmp_path / "empty").mkdir()
    for name in ("run", "old", "empty"):
        with start(tmp_path / name, {"v": 2}, force=True) as run:
            run.save_text("new.txt", "new")
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["config.json", "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "old", "run"]


def test_a_partial_directory_that_is_not_a_run_is_never_continued_or_removed(tmp_path: Path) -> None:
    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / "notes").write_text("mine")
    (partial / "config.json").write_text('{"something": "else"}')
    before = _tree(tmp_path)
    for flags in ({"force": True}, {"resume": True}, {}):
        with pytest.raises(RunExists, match="is not an advlab run .*'config.json', 'notes'"):
            with start(tmp_path / "run", {"v": 1}, **flags):  # type: ignore[arg-type]
                pass
    assert _tree(tmp_path) == before


def test_force_clears_an_interrupted_run_only_once_it_holds_the_lock(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with start(tmp_path / "run", {"v": 1}) as run:
            run.save_text("old.txt", "old")
            (run.path / "sub").mkdir()
            (run.path / "sub" / "link").symlink_to(tmp_path / "outside")
            raise KeyboardInterrupt
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x").write_text("x")
    with start(tmp_path / "run", {"v": 2}, force=True) as run:
        assert not run.resumed and sorted(p.name for p in run.path.iterdir()) == ["LOCK", "config.json"]
    assert (tmp_path / "outside" / "x").read_text() == "x"


def test_a_run_that_appears_meanwhile_is_not_swapped_out_without_force(tmp_path: Path) -> None:
    with pytest.raises(RunExists, match="appeared or changed while this run was written"):
        with start(tmp_path / "run", {"v": 1}) as run:
            run.save_text("mine.txt", "mine")
            (tmp_path / "run").mkdir()
            (tmp_path / "run" / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["theirs.txt"]
    assert (tmp_path / "run.partial" / "mine.txt").exists() and not (tmp_path / "run.partial" / LOCK_FILE).exists()


def test_force_does_not_swap_out_a_directory_that_became_something_else(tmp_path: Path) -> None:
    with start(tmp_path / "run", {"v": 1}):
        pass
    with pytest.raises(RunExists, match="appeared or changed"):
        with start(tmp_path / "run", {"v": 2}, force=True):
            (tmp_path / "run" / "config.json").unlink()
            (tmp_path / "run" / "keep.txt").write_text("keep")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["keep.txt"]
    assert (tmp_path / "run.partial" / "config.json").exists()


# ------------------------------------------------------------------------------------------ links
@pytest.mark.parametrize("flags", [{}, {"force": True}, {"resume": True}])
@pytest.mark.parametrize("where", ["run", "run.partial"])
def test_a_symlinked_out_or_partial_is_never_followed(tmp_path: Path, flags: dict[str, bool], where: str) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "t.txt").write_text("t")
    (tmp_path / where).symlink_to(target)
    before = _tree(tmp_path)
    with pytest.raises(AdvlabError, match=rf"'{tmp_path / where}' is a symbolic link; advlab does not follow it"):
        with start(tmp_path / "run", {"v": 1}, **flags):  # type: ignore[arg-type]
            pass
    assert _tree(tmp_path) == before


def test_a_dangling_symlinked_partial_is_not_followed_either(tmp_path: Path) -> None:
    (tmp_path / "run.partial").symlink_to(tmp_path / "nowhere")
    with pytest.raises(AdvlabError, match="symbolic link"):
        with start(tmp_path / "run", {"v": 1}, resume=True):
            pass
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dir", "hardlink"])
def test_a_lock_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    partial = tmp_path / "run.partial"
    partial.mkdir()
    (tmp_path / "elsewhere").write_text("{}")
    lockfile = partial / LOCK_FILE
    if kind == "symlink":
        lockfile.symlink_to(tmp_path / "elsewhere")
    elif kind == "fifo":
        os.mkfifo(lockfile)
    elif kind == "hardlink":  # taking the lock writes into it: the other name's content would change
        os.link(tmp_path / "elsewhere", lockfile)
    else:
        lockfile.mkdir()
    before = _tree(tmp_path)
    for flags in ({"force": True}, {"resume": True}):
        with pytest.raises(AdvlabError, match="not advlab's lock file; advlab will not use it"):
            with start(tmp_path / "run", {"v": 1}, **flags):  # type: ignore[arg-type]
                pass
    assert _tree(tmp_path) == before


def test_attach_refuses_a_symlinked_partial(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "run.partial").symlink_to(tmp_path / "target")
    from advlab.runs import attach

    with pytest.raises(AdvlabError, match="no run in progress"):
        attach(tmp_path / "run")


# ------------------------------------------------------------------------------------------ atomic_write
def _char_device(path: Path) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here: {e}")


@pytest.mark.parametrize("kind", ["link-to-file", "dangling-link", "link-to-dir", "fifo", "dir", "socket", "chardev"])
def test_atomic_write_refuses_anything_but_a_regular_file(tmp_path: Path, kind: str) -> None:
    (tmp_path / "real.txt").write_text("real")
    (tmp_path / "realdir").mkdir()
    target = tmp_path / "out.json"
    if kind == "link-to-file":
        target.symlink_to(tmp_path / "real.txt")
    elif kind == "dangling-link":
        target.symlink_to(tmp_path / "missing.txt")
    elif kind == "link-to-dir":
        target.symlink_to(tmp_path / "realdir")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "dir":
        target.mkdir()
    elif kind == "socket":
        import socket as sockets

        s = sockets.socket(sockets.AF_UNIX)
        s.bind(str(target))
        s.close()
    else:
        _char_device(target)
    before = _tree(tmp_path)
    with pytest.raises(AdvlabError, match=r"'.*out.json' is a .*; advlab writes regular files only and will not"):
        atomic_write(target, '{"a": 1}\n')
    with pytest.raises(AdvlabError, match="will not replace"):
        check_writable(target)
    assert _tree(tmp_path) == before and (tmp_path / "real.txt").read_text() == "real"


def test_atomic_write_replaces_a_regular_file_and_creates_missing_folders_only(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("old")
    atomic_write(tmp_path / "a.json", "new")
    assert (tmp_path / "a.json").read_text() == "new"
    atomic_write(tmp_path / "new" / "deeper" / "b.json", "b")
    assert (tmp_path / "new" / "deeper" / "b.json").read_text() == "b"
    (tmp_path / "afile").write_text("a file")
    for where in (tmp_path / "afile" / "c.json", tmp_path / "afile" / "deeper" / "c.json"):
        with pytest.raises(AdvlabError, match="a folder on its path is a file"):
            atomic_write(where, "c")
    assert (tmp_path / "afile").read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "afile", "new"]  # no temp file left


def test_a_hard_link_elsewhere_keeps_its_content(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("old")
    os.link(tmp_path / "a.json", tmp_path / "other.json")
    atomic_write(tmp_path / "a.json", "new")
    assert (tmp_path / "other.json").read_text() == "old" and (tmp_path / "a.json").read_text() == "new"


# ------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["x" * 300, "/".join(["y" * 200] * 25), "a\nb", "runs/a\tb", "sub/x" + "z" * 250])
def test_names_the_os_cannot_use_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AdvlabError) as e:
        with start(name, {"v": 1}):
            pass
    assert "\n" not in str(e.value) and len(str(e.value)) < 400
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ the lock
def _race(partial: Path, barrier: object, done: object, results: object) -> None:
    """One racer: wait for all, try to take ``partial``'s lock, report, and hold it until everyone reported."""
    barrier.wait(timeout=60)  # type: ignore[attr-defined]
    try:
        held = runlock.acquire(partial)
    except RunInUse:
        results.put(False)  # type: ignore[attr-defined]
        done.wait(timeout=60)  # type: ignore[attr-defined]
        return
    results.put(True)  # type: ignore[attr-defined]
    done.wait(timeout=60)  # type: ignore[attr-defined]
    runlock.release(held)


def test_exactly_one_of_six_racing_processes_takes_over_a_stale_lock(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    dead, started = _dead_pid(), time.monotonic()
    for trial in range(30):
        partial = tmp_path / f"run{trial}.partial"
        _lock_naming(partial, dead)
        barrier, done, results = ctx.Barrier(6), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(partial, barrier, done, results)) for _ in range(6)]
        for p in procs:
            p.start()
        won = [results.get(timeout=60) for _ in procs]
        done.set()
        for p in procs:
            p.join(timeout=60)
        assert sum(won) == 1, f"trial {trial}: {sum(won)} winners"
        assert all(p.exitcode == 0 for p in procs)
        assert not (partial / LOCK_FILE).exists()  # the winner released it
    assert time.monotonic() - started < 120


def _hold(partial: Path, ready: object) -> None:
    """Another process's run: take ``partial``'s lock and keep it until killed."""
    runlock.acquire(partial)
    ready.set()  # type: ignore[attr-defined]
    time.sleep(60)


def test_a_live_holder_is_never_taken_over_and_a_killed_one_is(tmp_path: Path) -> None:
    partial = tmp_path / "run.partial"
    partial.mkdir()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(partial, ready))
    proc.start()
    try:
        assert ready.wait(timeout=60)
        with pytest.raises(RunInUse, match=f"in use by pid {proc.pid} on {socket.gethostname()}"):
            runlock.acquire(partial)
        assert runlock.holder(partial) == runlock.Holder(proc.pid, socket.gethostname(), True)
        for flags in ({"force": True}, {"resume": True}):
            with pytest.raises(RunInUse, match=f"in use by pid {proc.pid}"):
                with start(tmp_path / "run", {"v": 1}, **flags):  # type: ignore[arg-type]
                    pass
        assert sorted(p.name for p in partial.iterdir()) == [LOCK_FILE]
    finally:
        proc.kill()
        proc.join()
    assert runlock.holder(partial) is None  # its file lock went with it; its pid stays in the file
    held = runlock.acquire(partial)
    assert json.loads((partial / LOCK_FILE).read_text())["pid"] == os.getpid()
    runlock.release(held)
    assert not (partial / LOCK_FILE).exists()


def test_which_unheld_locks_still_count(tmp_path: Path) -> None:
    """Nobody holds the file lock: a dead pid, an empty file, or a pid written with flock (reused since) is stale;
    a lock from another host, or a live pid written without flock (an older advlab), still counts."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cases: dict[str, tuple[int, str | None, dict[str, bool]]] = {
            "dead": (_dead_pid(), None, {}),
            "reused": (live.pid, None, {"flock": True}),
            "old-live": (live.pid, None, {}),
            "other-host": (1, "elsewhere.example", {"flock": True}),
        }
        for name, (pid, host, extra) in cases.items():
            partial = tmp_path / f"{name}.partial"
            _lock_naming(partial, pid, host, **extra)
            if name in ("old-live", "other-host"):
                with pytest.raises(RunInUse, match=f"in use by pid {pid}"):
                    runlock.acquire(partial)
                assert json.loads((partial / LOCK_FILE).read_text())["pid"] == pid
            else:
                runlock.release(runlock.acquire(partial))
                assert not (partial / LOCK_FILE).exists()
        (tmp_path / "empty.partial").mkdir()
        (tmp_path / "empty.partial" / LOCK_FILE).write_text("")
        runlock.release(runlock.acquire(tmp_path / "empty.partial"))
    finally:
        live.kill()
        live.wait()


def test_release_never_removes_a_lock_taken_since_and_a_leftover_never_blocks(tmp_path: Path) -> None:
    partial = tmp_path / "run.partial"
    partial.mkdir()
    first = runlock.acquire(partial)
    second = runlock.acquire(partial)  # this process's leftover (an earlier in-process run) is let go of
    assert first.fd == -1 and second.fd >= 0
    runlock.release(first)  # nothing: it was let go of already
    assert (partial / LOCK_FILE).exists()
    (partial / LOCK_FILE).unlink()  # someone removed it by hand and another run took a new one
    (partial / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    runlock.release(second)
    assert json.loads((partial / LOCK_FILE).read_text())["host"] == "elsewhere.example"


# ------------------------------------------------------------------------------------------ the CLI
def test_cli_force_keeps_a_users_folder_and_replaces_a_run(tmp_path: Path) -> None:
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "keep.txt").write_text("keep")
    before = _tree(tmp_path)
    rc, _, err = run_cli(_attack(docs, "--force"))
    _one_line(rc, err, "is not an advlab run", "'keep.txt'", "will not remove it")
    assert _tree(tmp_path) == before
    rc, _, err = run_cli(_attack(tmp_path / "run"))
    assert rc == 0, err
    (tmp_path / "run" / "stale.txt").write_text("from the earlier run")
    rc, _, err = run_cli(_attack(tmp_path / "run", "--force"))
    assert rc == 0, err
    assert not (tmp_path / "run" / "stale.txt").exists() and (tmp_path / "run" / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydocs", "run"]


@pytest.mark.parametrize("flags", [["--resume"], ["--force"], []])
def test_cli_a_planted_partial_link_is_one_line_and_nothing_is_touched(tmp_path: Path, flags: list[str]) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "t.txt").write_text("t")
    (tmp_path / "run.partial").symlink_to(target)
    before = _tree(tmp_path)
    rc, _, err = run_cli(_attack(tmp_path / "run", *flags))
    _one_line(rc, err, "is a symbolic link", "does not follow it")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("name", ["x" * 300, "a\nb"])
def test_cli_names_the_os_cannot_use_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(_attack(name))
    _one_line(rc, err, "--out")
    assert list(tmp_path.iterdir()) == []


def test_partial_config_reads_a_real_partial_only(tmp_path: Path) -> None:
    from advlab.runs.rundir import partial_config

    (tmp_path / "a.partial").mkdir()
    (tmp_path / "a.partial" / "config.json").write_text('{"batch_size": 7}')
    (tmp_path / "b.partial").symlink_to(tmp_path / "a.partial")
    (tmp_path / "c.partial").mkdir()
    (tmp_path / "c.partial" / "config.json").write_text("not json")
    (tmp_path / "d.partial").mkdir()
    (tmp_path / "d.partial" / "config.json").symlink_to(tmp_path / "a.partial" / "config.json")
    assert partial_config(tmp_path / "a") == {"batch_size": 7}
    assert [partial_config(tmp_path / n) for n in "bcde"] == [None] * 4
