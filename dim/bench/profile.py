"""Profiles of a server under load: py-spy samples of every thread, summarised.

``py-spy record --format raw`` writes collapsed stacks, one line per distinct stack:
``thread (TID): NAME;frame;frame;... COUNT`` where a frame is ``function (file:line)``.
Idle samples (threads asleep in epoll or a queue) are left out by py-spy, so the counts are
CPU time.  :func:`summarize` turns them into the top functions by self and by inclusive time.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def _frame_key(frame: str) -> str:
    """A frame without its line number: ``function (file)``, with the file shortened."""
    frame = _FRAME_LINE.sub(")", frame.strip())
    frame = re.sub(r"\(/.*?/site-packages/", "(", frame)
    frame = re.sub(r"\(/.*?/(dim/)", r"(\1", frame)
    return re.sub(r"\(/.*?/lib/python3\.\d+/", "(", frame)


def summarize(text: str, top: int = 25) -> dict[str, Any]:
    """Top functions by self samples (the leaf frame) and inclusive samples (anywhere on the
    stack, counted once per stack), and samples per thread."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        count = int(m.group("count"))
        frames = m.group("stack").split(";")
        thread = frames[0]
        if thread.startswith("thread ") or thread.startswith("process "):
            frames = frames[1:]
            thread = re.sub(r"^thread \(\d+\): ?", "", thread) or "thread"
        else:
            thread = "all"
        if not frames:
            continue
        total += count
        threads[thread] += count
        keys = [_frame_key(f) for f in frames]
        self_c[keys[-1]] += count
        for key in set(keys):
            incl[key] += count

    def table(c: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": k, "samples": v, "percent": round(100.0 * v / total, 1)}
                for k, v in c.most_common(top)] if total else []

    return {"samples": total, "threads": dict(threads.most_common()),
            "self": table(self_c), "inclusive": table(incl)}


def pyspy() -> str | None:
    """The py-spy executable beside this Python, or on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Sampler:
    """``py-spy record`` attached to a process until :meth:`stop`."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        exe = pyspy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out = out
        self.log = open(out.with_suffix(".log"), "wb")
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(rate),
                                      "--format", "raw", "--threads", "--nonblocking",
                                      "-o", str(out)], stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, top: int = 25) -> dict[str, Any]:
        """Stop sampling (py-spy writes its file on SIGINT) and summarise what it saw."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        try:
            text = self.out.read_text(errors="replace")
        except FileNotFoundError:
            return {"samples": 0, "error": "py-spy wrote no profile", "file": str(self.out)}
        return {**summarize(text, top), "file": str(self.out), "tool": "py-spy record (raw), "
                "all threads, idle samples excluded"}
