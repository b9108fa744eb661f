"""The chat's log: Twisted's log events go to a file under the XDG state directory, never to
the terminal Textual draws on (a traceback written there would stay over the screen)."""
from __future__ import annotations

import os
from typing import IO, Any

import platformdirs
from twisted.logger import (FilteringLogObserver, LogBeginner, LogLevel,
                            LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver)

APP_NAME = "dim-chat"


def log_path() -> str:
    """Where the chat's log goes: ``$XDG_STATE_HOME/dim-chat/dim-chat.log``."""
    return os.path.join(platformdirs.user_state_dir(APP_NAME), "dim-chat.log")


def start_logging(path: str | None = None, beginner: LogBeginner | None = None,
                  level: LogLevel = LogLevel.info) -> IO[Any]:
    """Send every log event (``level`` and above) to ``path`` from now on, and the buffered
    ones since the start; standard output and error are left to the terminal.  Returns the
    open file."""
    path = path or log_path()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    out = open(path, "a", encoding="utf-8")
    observer = FilteringLogObserver(
        textFileLogObserver(out),
        [LogLevelFilterPredicate(defaultLogLevel=level)])
    (beginner or globalLogBeginner).beginLoggingTo(
        [observer], redirectStandardIO=False)
    return out
