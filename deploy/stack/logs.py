"""The stack's console lines and its per-component log files ($STACK_DIR/log/NAME.log)."""

from __future__ import annotations

import os
import time
from pathlib import Path

START_MARKER = b"=== deploy.stack: starting %s"  # written to NAME.log before each start of NAME


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def log_tail(log_dir: Path, name: str, lines: int = 15) -> str:
    try:
        text = (log_dir / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def logged_since_start(log_dir: Path, name: str, text: bytes) -> bool:
    """Whether the component wrote `text` after the supervisor's last start marker in its log."""
    try:
        with open(log_dir / f"{name}.log", "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 1_000_000))
            tail = log.read()
    except OSError:
        return False
    marker = tail.rfind(START_MARKER % name.encode())
    return marker >= 0 and text in tail[marker:]
