"""The chat page in a real browser: Playwright driving Debian's headless Chromium (/usr/bin/chromium).

It loads the page, picks the bundled character `mira`, sends a message, sees the reply stream in
from the embedded model and the faithfulness view under it, resumes the session from the list, and
saves a screenshot (copied to $ROLECRAFT_SCREENSHOT when that is set).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_server_support import FakeScorer

from rolecraft.agent import AgentConfig
from rolecraft.errors import RolecraftError
from rolecraft.llm.base import LLM
from rolecraft.server import running_server
from rolecraft.server.characters import ServerConfig, create_character_app
from rolecraft.workspace import Workspace

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (make setup installs it)"),
]


def scorer_or_stand_in(request: pytest.FixtureRequest) -> tuple[Any, bool]:
    """The shipped APC scorer; while its discriminators are not all shipped, a word-overlap stand-in."""
    try:
        return request.getfixturevalue("apc_scorer"), True
    except RolecraftError:
        return FakeScorer(), False


def test_chat_page_streams_a_reply_and_shows_its_faithfulness(
    local_llm: LLM, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scorer, real = scorer_or_stand_in(request)
    config = ServerConfig(agent=AgentConfig(seed=7))  # the same reply (and screenshot) every run
    app = create_character_app(
        local_llm, tmp_path / "sessions.sqlite3", Workspace(tmp_path / "workspace"), config, scorer=lambda: scorer
    )
    shot = tmp_path / "chat-page.png"
    with running_server(app) as url, sync_api.sync_playwright() as pw:
        root = url.removesuffix("/v1")
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            errors: list[str] = []
            elsewhere: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(root) else elsewhere.append(r.url))
            page.goto(f"{root}/")
            page.wait_for_selector("#character option[value=mira]", state="attached")
            page.select_option("#character", "mira")
            page.wait_for_selector(".msg.greeting")  # Mira's greeting opens a new chat
            page.click("#settings summary")
            page.fill("#max-tokens", "24")
            page.evaluate(
                "window.updates = 0; new MutationObserver(() => window.updates++)"
                ".observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true})"
            )
            page.fill("#input", "Hello Mira! Do you have a cat?")
            page.click("#send")
            page.wait_for_selector(".msg.assistant .faith .total", timeout=180_000)
            reply = page.inner_text(".msg.assistant .text")
            total = page.inner_text(".faith .total")
            chips = page.eval_on_selector_all(".faith li", "els => els.map(e => [e.className, e.textContent])")
            updates = page.evaluate("window.updates")
            page.wait_for_selector("#sessions li")
            page.screenshot(path=str(shot), full_page=True)
            # resume: a new chat, then the session from the list, with its stored faithfulness view
            page.click("#new-chat")
            assert page.locator(".msg.assistant").count() == 0
            page.click("#sessions li")
            page.wait_for_selector(".msg.assistant .faith .total")
            assert page.inner_text(".msg.assistant .text") == reply
        finally:
            browser.close()
    if os.environ.get("ROLECRAFT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["ROLECRAFT_SCREENSHOT"])
    assert reply.strip() and updates > 3  # the reply arrived piece by piece
    assert total.startswith("APC ") and chips, chips
    assert any("Mira" in text for _, text in chips) or not real
    assert not errors and not elsewhere, (errors, elsewhere)
    assert shot.stat().st_size > 10_000
