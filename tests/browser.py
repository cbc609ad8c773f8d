"""A real browser for the tests that prove a page works: Debian's chromium, headless."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_HINT = "install Debian's chromium: apt-get install -y chromium (or run `bash tests/tools.sh`)"


def run_chromium(url: str, profile: Path, *mode: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Load `url` in headless chromium with its own profile folder; `mode` is what to take of the
    page (`--dump-dom`, `--screenshot=F`). Fails the test, never skips, without a chromium."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail(f"chromium not found: {CHROMIUM_HINT}", pytrace=False)
    result = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1400,1500",
            # Let the page's fetch() calls and rendering run before the DOM or the pixels are taken.
            "--virtual-time-budget=10000",
            *mode,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result
