"""Real Chromium against a real `warden serve`: Debian's chromium (/usr/bin/chromium) through Playwright,
never a downloaded browser. Skipped when it is missing, unless WARDEN_REQUIRE_BROWSER=1 (CI sets it)."""

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pyotp
import pytest

from app import upgrade_database
from tests.conftest import free_port, wait_for_port

CHROMIUM = os.environ.get("WARDEN_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "correct horse battery staple"
ARTIFACTS = os.environ.get("WARDEN_BROWSER_ARTIFACTS")


def _browser_or_skip():
    if not shutil.which(CHROMIUM):
        if os.environ.get("WARDEN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"WARDEN_REQUIRE_BROWSER=1 but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"browser tests skipped: {CHROMIUM} not found (apt-get install chromium; "
                    "set WARDEN_REQUIRE_BROWSER=1 to make this a failure)")
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture
def warden_cli(tmp_path):
    """Run `warden ...` against a fresh SQLite instance in tmp_path; `.serve()` starts it on a free port."""
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    upgrade_database(url)
    env = {**os.environ, "WARDEN_DATABASE_URL": url, "WARDEN_KEY_DIR": str(tmp_path / "keys"),
           "WARDEN_LOG_DIR": str(tmp_path / "logs")}
    command = [sys.executable, "-c", "import app; app.main()"]
    servers = []

    class Cli:
        @staticmethod
        def run(*args, **kwargs) -> subprocess.CompletedProcess:
            return subprocess.run([*command, *args], env=env, text=True, check=True, capture_output=True,
                                  **kwargs)

        @staticmethod
        def serve() -> str:
            port = free_port()
            servers.append(subprocess.Popen([*command, "serve", "--port", str(port), "--workers", "1"], env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_for_port(port)
            return f"http://127.0.0.1:{port}"
    yield Cli
    for process in servers:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def open_page():
    """Open a Chromium page on a base URL (one browser per test)."""
    sync_api = _browser_or_skip()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        contexts = []

        def open_(base_url: str):
            contexts.append(browser.new_context(base_url=base_url))
            return contexts[-1].new_page()
        yield open_
        for context in contexts:
            context.close()
        browser.close()


def shot(page, name: str) -> None:
    if ARTIFACTS:
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(timezone.utc) + timedelta(seconds=30 * offset_steps))
