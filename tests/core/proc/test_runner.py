"""The one child-process runner: a failure is classified (crashed with which signal, out of
memory, bad input, failed), never only a scraped log line; a job's output file appears only
when the job succeeded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.core.errors import Cancelled, DiskSpaceError
from app.core.jobs import CancelToken
from app.core.proc import failure as f
from app.core.proc.runner import emit, output_file, partial_path, run_child


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]  # a stand-in child: the launcher is tested in test_desktop_core


def test_an_illegal_instruction_is_a_crash_named_sigill() -> None:
    r = run_child(_python("import os, signal; os.kill(os.getpid(), signal.SIGILL)"), cancel=CancelToken(), what="t")
    assert r.failure == f.Failure(f.CRASHED, r.returncode, "SIGILL")
    assert r.reason().startswith("crashed with SIGILL (illegal instruction")


def test_kinds_of_failure() -> None:
    assert f.classify(0) is None
    assert f.classify(-11).signal == "SIGSEGV" and f.classify(-11).kind == f.CRASHED  # type: ignore[union-attr]
    assert f.classify(-9).kind == f.OUT_OF_MEMORY  # type: ignore[union-attr]
    assert f.classify(1, ["Traceback", "MemoryError"]).kind == f.OUT_OF_MEMORY  # type: ignore[union-attr]
    assert f.classify(2).kind == f.BAD_INPUT  # type: ignore[union-attr]
    assert f.classify(1, events=[{"ev": "error", "kind": "bad_input"}]).kind == f.BAD_INPUT  # type: ignore[union-attr]
    assert f.classify(1).kind == f.FAILED  # type: ignore[union-attr]


def test_events_and_log_lines_arrive_apart() -> None:
    code = "from app.core.proc.runner import emit; print('log line'); emit('step', done=1)"
    events: list[dict[str, object]] = []
    r = run_child(_python(code), cancel=CancelToken(), what="t", on_event=events.append)
    assert r.returncode == 0 and r.failure is None
    assert events == [{"ev": "step", "done": 1}] and r.tail == ["log line"]
    assert callable(emit)


def test_cancel_terminates_the_child() -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run_child(_python("import time; time.sleep(60)"), cancel=token, what="sleeper")


def test_output_file_is_renamed_into_place_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    with pytest.raises(RuntimeError):
        with output_file(out, 1, "writing") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("the child failed")
    assert list(tmp_path.iterdir()) == []
    with output_file(out, 1, "writing") as tmp:
        assert tmp == partial_path(out)
        tmp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole" and sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf"]
    with pytest.raises(DiskSpaceError, match="not enough free disk space"):
        with output_file(tmp_path / "big.gguf", 1 << 62, "writing a huge file"):
            pass
