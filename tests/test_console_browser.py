"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright, on the lab.

The browser runs in the lab's ``client`` namespace (its executable is a wrapper that enters that
network namespace), so it reaches the nodes' consoles at 198.18.0.1/2:9453 like an operator's
browser on the cluster's network. Steps: the healthy pair from node1's console; a power-kill of
node1, seen from node2's console (node1 UNREACHABLE, node2 ALONE and degraded); node1 booted and
back in sync, then a swap clicked and confirmed on node2's page, checked with ``hamirror status``
on both nodes. Screenshots go to a directory the test prints, and to docs/ with
``HAMIRROR_DOCS_SCREENSHOTS=1`` (how docs/console-*.png were made).
"""

from __future__ import annotations

import os
import shutil
import stat
import time

import pytest

from hamirror.lab import kvclient
from hamirror.lab.naming import LabPaths
from tests.agent_lab import LAB_MARKS, agents_lab, module, wait_for, writing

CHROMIUM = "/usr/bin/chromium"
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
pytestmark = [*LAB_MARKS, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing (apt-get install chromium)")]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from agents_lab(tmp_path_factory, "console", "--console")


def browser_in_client(lab, folder) -> str:
    """A Chromium launcher that runs the browser inside the lab's client network namespace."""
    path = os.path.join(folder, "chromium-in-client")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec nsenter --net={lab.paths.netns_file("client")} -- {CHROMIUM} "$@"\n')
    os.chmod(path, stat.S_IRWXU)
    return path


def shoot(page, artifacts: str, name: str) -> None:
    page.screenshot(path=os.path.join(artifacts, name), full_page=True)
    if os.environ.get("HAMIRROR_DOCS_SCREENSHOTS") == "1":
        shutil.copy(os.path.join(artifacts, name), os.path.join(DOCS, name))


def log_in(page, node_address: str, token: str) -> None:
    page.goto(f"http://{node_address}:9453/")
    page.fill("#token", token)
    page.click("#login-button")
    page.wait_for_selector('td[data-field="state"]')


def state(page, node: str):
    return page.locator(f'td[data-node="{node}"][data-field="state"]')


def test_console_shows_the_pair_a_power_kill_and_swaps_from_the_page(lab, tmp_path):
    artifacts = str(tmp_path)
    print(f"console screenshots in {artifacts}")
    token = open(os.path.join(LabPaths(lab.root).node_dir("node1", "etc"), "http.token")).read().strip()
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_in_client(lab, artifacts), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1150, "height": 900})
            # 1. The healthy pair, from node1's console, while a client writes through the VIP.
            with writing(lab, "console", artifacts) as acknowledged:
                log_in(page, "198.18.0.1", token)
                expect(state(page, "node1")).to_contain_text("PRIM")
                expect(state(page, "node2")).to_contain_text("SECOND")
                expect(page.locator('[data-field="vip"]')).to_have_text("VIP 198.18.0.100/24: on node1")
                expect(page.locator('[data-field="module-health"]')).to_have_text("HEALTHY")
                expect(page.locator(".node.reachable")).to_have_count(2)
                expect(page.locator('button[data-action="swap"]:visible')).to_have_count(2)   # both nodes' commands
                page.wait_for_timeout(5000)        # a few rate samples with the client's writes in them
                page.wait_for_function("document.querySelector('figure polyline') !== null")
                shoot(page, artifacts, "console-healthy.png")
                # Without JavaScript: the same status, rendered by the server; no command buttons.
                bare = browser.new_context(java_script_enabled=False).new_page()
                log_in(bare, "198.18.0.1", token)
                expect(state(bare, "node1")).to_contain_text("PRIM")
                expect(state(bare, "node2")).to_contain_text("SECOND")
                expect(bare.locator('button[data-action="swap"]:visible')).to_have_count(0)
                expect(bare.get_by_text("commands need JavaScript")).to_have_count(2)     # one per node
                expect(bare.locator(".nojs:visible")).to_have_count(2)
                bare.context.close()
            assert acknowledged, "the client got no write acknowledged through the VIP"

            # 2. Power-kill of the primary, seen from the survivor's console.
            assert lab.cli("kill", "node1").returncode == 0
            wait_for(lab, "node2", lambda m: m["state"] == "ALONE", 30, "node2 ALONE")
            log_in(page, "198.18.0.2", token)
            expect(state(page, "node1")).to_contain_text("UNREACHABLE", timeout=10000)
            expect(state(page, "node1")).not_to_contain_text("PRIM")        # never its last state
            expect(state(page, "node1")).to_have_class("state unreachable")
            expect(page.locator('.node.unreachable[data-node="node1"]')).to_contain_text("UNREACHABLE since")
            expect(state(page, "node2")).to_contain_text("ALONE")
            expect(state(page, "node2")).to_have_class("state degraded")
            expect(page.locator('[data-field="module-health"]')).not_to_have_text("HEALTHY")
            shoot(page, artifacts, "console-after-power-kill.png")

            # 3. node1 back and in sync; a swap clicked and confirmed on node2's page.
            assert lab.cli("boot", "node1").returncode == 0
            wait_for(lab, "node1", lambda m: m["state"] == "SECOND" and m["uptodate"], 60, "node1 SECOND up to date")
            wait_for(lab, "node2", lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND", 30, "node2 PRIM")
            expect(state(page, "node1")).to_contain_text("SECOND", timeout=10000)
            page.click('button[data-action="swap"][data-module="demo"][data-node="node2"]')
            expect(page.locator("#confirm")).to_be_visible()
            expect(page.locator("#confirm-text")).to_contain_text("Swap demo on node2 (now PRIM)")
            page.click("#confirm-ok")
            expect(page.locator("#result")).to_contain_text("swap demo: done, now SECOND", timeout=60000)
            # Checked from outside the page: node2's answer came once it is SECOND; node1 then takes over.
            assert module(lab, "node2")["state"] == "SECOND"
            wait_for(lab, "node1", lambda m: m["state"] == "PRIM" and m["peer_state"] == "SECOND", 20,
                     "node1 PRIM with node2 SECOND")
            assert module(lab, "node2")["state"] == "SECOND"
            expect(state(page, "node1")).to_contain_text("PRIM", timeout=10000)
            expect(state(page, "node2")).to_contain_text("SECOND")
            expect(page.locator('[data-field="vip"]')).to_have_text("VIP 198.18.0.100/24: on node1", timeout=10000)
            expect(page.locator(".events").first).to_contain_text("swap by console (http 198.18.0.200)")
            time.sleep(0.5)
            shoot(page, artifacts, "console-after-swap.png")
            assert not kvclient.missing(lab.paths, acknowledged)    # the writes of step 1 survived it all
        finally:
            browser.close()
