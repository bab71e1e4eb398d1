"""The dashboard and JupyterLab in a real browser: headless Chromium driven by selenium.

Screenshots are kept in ``test-artifacts/screenshots/`` at the project's root.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import clusterctl

pytest.importorskip("selenium", reason="selenium drives the browser")

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.local,  # the cluster whose pages the browser opens
    pytest.mark.skipif(
        CHROMEDRIVER is None or shutil.which("chromium") is None,
        reason="NO BROWSER: Debian's chromium and chromium-driver are not installed "
        "(scripts/test installs them as root)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def cluster():
    c = clusterctl.up(
        name="web", workers=2, port=0, dashboard_port=0, notebook=True, notebook_port=0
    )
    yield c
    c.shutdown()


def wait_for_text(driver, texts: list[str], timeout: float = 60) -> str:
    """The page's text once it shows every one of ``texts``; fail after ``timeout``."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        body = driver.find_element(By.TAG_NAME, "body").text
        if all(t in body for t in texts):
            return body
        assert time.monotonic() < deadline, f"{texts} not on {driver.current_url}:\n{body}"
        time.sleep(0.5)


def test_the_dashboard_lists_the_workers_after_a_scale(browser, cluster):
    cluster.scale(3)
    cluster.wait_for_workers(3)
    names = sorted(cluster.workers)
    assert len(names) == 3
    browser.get(cluster.dashboard_link)  # /status
    wait_for_text(browser, ["Processing", "Data Transfer"], timeout=30)  # bokeh drew it
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-status.png"))
    browser.get(cluster.dashboard_link.replace("/status", "/workers"))
    wait_for_text(browser, names)
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-workers.png"))


def test_jupyterlab_opens_with_its_token_and_not_without(browser, cluster):
    from selenium.webdriver.common.by import By

    url = cluster.backend.notebook_url()
    base = url.split("/lab?token=")[0]
    browser.get(f"{base}/lab")  # no token: the login page, not the lab
    wait_for_text(browser, ["token"], timeout=30)
    assert "/login" in browser.current_url
    assert not browser.find_elements(By.ID, "jp-main-dock-panel")
    browser.save_screenshot(str(SCREENSHOTS / "jupyterlab-refused.png"))

    browser.get(url)
    deadline = time.monotonic() + 90
    while not browser.find_elements(By.CSS_SELECTOR, ".jp-Launcher, .jp-LauncherBody"):
        assert time.monotonic() < deadline, "JupyterLab's launcher never appeared"
        time.sleep(0.5)
    assert "/lab" in browser.current_url
    browser.save_screenshot(str(SCREENSHOTS / "jupyterlab.png"))


def test_the_dashboard_from_the_notebook_container_and_through_jupyterlab_s_port(browser, request):
    """A docker cluster with its notebook: ``Client().dashboard_link`` in the notebook
    container opens in a browser here, and the dashboard's pages load through JupyterLab's
    own port with its token (jupyter-server-proxy, allowed this cluster's scheduler alone)."""
    import docker

    request.getfixturevalue("images")  # built once per session (skips without an engine)
    cluster = clusterctl.up(
        name="webd",
        backend="docker",
        workers=2,
        port=0,
        dashboard_port=0,
        notebook=True,
        notebook_port=0,
    )
    try:
        notebook = docker.from_env().containers.get("webd-notebook")
        code, out = notebook.exec_run(
            [
                "python",
                "-c",
                "from distributed import Client; print(Client(timeout=30).dashboard_link)",
            ]
        )
        assert code == 0, out.decode()[-800:]
        link = out.decode().split()[-1]
        assert link == cluster.dashboard_link, (link, cluster.dashboard_link)
        browser.get(link)
        wait_for_text(browser, ["Processing", "Data Transfer"], timeout=60)

        base, token = cluster.backend.notebook_url().split("/lab?token=")
        proxied = f"{base}/proxy/webd-scheduler:8787"
        browser.get(f"{proxied}/workers?token={token}")  # the token's cookie, from here on
        wait_for_text(browser, sorted(cluster.workers), timeout=60)
        browser.save_screenshot(str(SCREENSHOTS / "dashboard-through-jupyterlab.png"))
        browser.delete_all_cookies()
        browser.get(f"{proxied}/workers")  # without the token: JupyterLab's login page
        wait_for_text(browser, ["token"], timeout=30)
        assert "/login" in browser.current_url
        browser.get(f"{base}/proxy/webd-worker-1:8788/health?token={token}")
        wait_for_text(browser, ["not allowed"], timeout=30)  # only the scheduler is
    finally:
        cluster.shutdown()
