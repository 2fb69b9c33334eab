"""
Real headless browser tests: Debian's C{chromium} driven by Selenium
through Debian's C{chromedriver} (never Selenium Manager, never a
downloaded browser), against the real C{twistd -n notificator}.

 - the monitor page shows a user who connects, in English and Korean, and
   its connection test receives the notification it sends;
 - a page on another loopback origin loads C{eventSourceClient.js}, which
   connects with credentials (CORS) and hands C{notify} / C{appr} to the
   page's C{webNotifyProcess} / C{sancProcess}.

In CI (C{CI} set) a missing browser fails these tests; elsewhere they skip
with the reason.  Screenshots go to the test's temporary directory, or to
C{$NOTIFICATOR_SCREENSHOTS} when set.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Server, free_port, not_here, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FORM = "application/x-www-form-urlencoded"
WAIT = 20.0

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]


def _missing() -> list[str]:
    missing = [
        f"{path} (apt-get install chromium chromium-driver)"
        for path in (CHROMIUM, CHROMEDRIVER)
        if not os.access(path, os.X_OK)
    ]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install selenium)")
    return missing


def open_browser(
    testcase: SynchronousTestCase, language: str = "en-US", flags: Iterable[str] = ()
) -> Any:
    """
    Start headless chromium with C{language} as the browser's language (and
    these command-line C{flags} besides L{CHROMIUM_FLAGS}); closed in the
    test's cleanup.  Fails in CI and skips elsewhere when the browser,
    driver or selenium is missing.
    """
    missing = _missing()
    if missing:
        not_here("BROWSER TEST NOT RUN: missing " + ", ".join(missing))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, *flags]:
        options.add_argument(flag)
    profile = os.path.abspath(testcase.mktemp())
    os.makedirs(profile)
    options.add_argument("--user-data-dir=" + profile)
    options.add_argument("--lang=" + language)
    primary = language.split("-")[0]
    options.add_experimental_option("prefs", {"intl.accept_languages": f"{language},{primary}"})
    # The console, for tests that check it stays clean (no 404 favicon).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=os.path.join(profile, "driver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    testcase.addCleanup(driver.quit)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = WAIT) -> Any:
    """Wait (bounded) until C{condition(driver)} is truthy; fail naming C{what}."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def screenshot(testcase: SynchronousTestCase, driver: Any, name: str) -> str:
    """Save a PNG of the page; return its path."""
    path = os.path.abspath(testcase.mktemp()) + f"-{name}.png"
    driver.save_screenshot(path)
    target = os.environ.get("NOTIFICATOR_SCREENSHOTS")
    if target:
        os.makedirs(target, exist_ok=True)
        shutil.copy(path, os.path.join(target, name + ".png"))
    return path


class StaticPages:
    """
    A tiny HTTP server on another loopback origin, serving fixed pages
    (the "groupware"); stopped in the test's cleanup.
    """

    def __init__(self, testcase: SynchronousTestCase, host: str) -> None:
        #: path -> HTML; fill it once the server's port is known.
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.origin = f"http://{host}:{self.httpd.server_address[1]}"
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        testcase.addCleanup(self.stop, thread)

    def stop(self, thread: threading.Thread) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        thread.join(10)


def groupware_page(server_port: int, user_id: str | None) -> str:
    """A groupware header page that includes the client script as docs/integration.rst says."""
    attribute = f' data-user-id="{user_id}"' if user_id is not None else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>groupware</title>
<script>
window.received = [];
window.approvals = [];
function webNotifyProcess(data) {{ window.received.push(data); }}
function sancProcess(data) {{ window.approvals.push(data); }}
window.resets = [];
function onNotificatorReset(info) {{ window.resets.push(info); }}
</script>
<script src="http://127.0.0.1:{server_port}/javascripts/eventSourceClient.js"{attribute}></script>
</head><body><h1>groupware</h1></body></html>
"""


def connected(server: Server, user_id: str) -> bool:
    status, _, body = server.request("GET", "/users")
    return status == 200 and user_id in [u["userId"] for u in json.loads(body)["users"]]


class MonitorPageBrowserTests(SynchronousTestCase):
    def test_monitor_shows_a_user_who_connects(self) -> None:
        """The English monitor page lists a user within a poll of their stream opening."""
        driver = open_browser(self, "en-US")
        server = Server(self).start()
        driver.get(f"http://127.0.0.1:{server.port}/")
        self.assertEqual(driver.find_element("css selector", "h1").text, "Notificator monitor")
        wait_for(
            driver,
            lambda d: d.find_element("id", "poll-status").text.startswith("Updated"),
            "the first poll",
        )
        self.assertTrue(driver.find_element("id", "no-users").is_displayed())

        client = server.subscribe("/sse/watch-u1")
        client.next_event()
        client2 = server.subscribe("/sse/watch-u1")
        client2.next_event()
        row = wait_for(
            driver,
            lambda d: d.find_elements("css selector", 'tr[data-user-id="watch-u1"]'),
            "watch-u1 in the user list",
        )[0]
        cells = [td.text for td in row.find_elements("css selector", "td")]
        self.assertEqual(cells[0], "watch-u1")
        self.assertEqual(cells[1], "2")
        self.assertEqual(cells[3], "127.0.0.1")
        wait_for(
            driver, lambda d: d.find_element("id", "sum-streams").text == "2", "the stream count"
        )
        self.assertFalse(driver.find_element("id", "no-users").is_displayed())
        screenshot(self, driver, "monitor-en")
        # Nothing failed to load, the icon included (it was a 404 in every console).
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        self.assertEqual(errors, [])
        # The page is in access.log, its polls are not (monitor.accessLog false).
        server.wait_for_log(r'"GET /static/monitor\.js HTTP/1\.1" 200 ', name="access.log")
        access = server.log("access.log")
        self.assertNotIn("/users", access)
        self.assertNotIn("/health", access)

        client.close()
        client2.close()
        wait_for(
            driver,
            lambda d: not d.find_elements("css selector", 'tr[data-user-id="watch-u1"]'),
            "watch-u1 to leave the list",
        )

    def test_korean_monitor_connection_test(self) -> None:
        """In Korean, the connection test connects as a user and shows the notification it sends."""
        driver = open_browser(self, "ko-KR")
        server = Server(self).start()
        driver.get(f"http://127.0.0.1:{server.port}/")
        self.assertEqual(driver.find_element("css selector", "h1").text, "Notificator 모니터")
        user = driver.find_element("id", "test-user")
        user.clear()
        user.send_keys("테스트 사용자")
        driver.find_element("id", "connect").click()
        wait_for(
            driver,
            lambda d: d.find_element("id", "stream-state").get_attribute("data-state") == "open",
            "the test stream to open",
        )
        self.assertEqual(driver.find_element("id", "stream-state").text, "연결됨")
        wait_for(
            driver,
            lambda d: d.find_elements("css selector", 'tr[data-event="connect"]'),
            "the connect event",
        )
        driver.find_element("id", "send").click()
        row = wait_for(
            driver,
            lambda d: d.find_elements("css selector", 'tr[data-event="notify"]'),
            "the test notification",
        )[0]
        data = json.loads(row.find_element("css selector", "td.data").text)
        self.assertEqual(data["title"], "테스트")
        wait_for(
            driver,
            lambda d: "1개에 전달" in d.find_element("id", "send-status").text,
            "the delivered count",
        )
        wait_for(
            driver,
            lambda d: d.find_elements("css selector", 'tr[data-user-id="테스트 사용자"]'),
            "the test user in the user list",
        )
        self.assertTrue(connected(server, "테스트 사용자"))
        screenshot(self, driver, "monitor-ko")


class ClientScriptBrowserTests(SynchronousTestCase):
    def test_other_origin_receives_notify_by_path(self) -> None:
        """A page on another origin gets a posted notify in webNotifyProcess (path form, CORS)."""
        user_id = "gw 사용자/1"
        driver = open_browser(self)
        groupware = StaticPages(self, "127.0.0.2")
        server = Server(
            self, local={"sse": {"header": {"Access-Control-Allow-Origin": [groupware.origin]}}}
        ).start()
        groupware.pages["/header.html"] = groupware_page(server.port, user_id)

        driver.get(groupware.origin + "/header.html")
        self._wait_connected(server, user_id)
        data = '{"title":"결재 요청","n":1}'
        body = "id=" + quote("notify_" + user_id) + "&data=" + quote(data)
        status, doc = server.post(body, FORM)
        self.assertEqual((status, doc["delivered"]), (200, 1))
        received = wait_for(
            driver,
            lambda d: d.execute_script("return window.received"),
            "webNotifyProcess to be called",
        )
        self.assertEqual([json.loads(r) for r in received], [{"title": "결재 요청", "n": 1}])
        self.assertEqual(driver.execute_script("return window.approvals"), [])
        url = driver.execute_script("return NotificatorClient.url()")
        path = "/sse/gw%20%EC%82%AC%EC%9A%A9%EC%9E%90%2F1"
        self.assertEqual(url, f"http://127.0.0.1:{server.port}{path}")

    def test_cookie_form_retries_after_refusal(self) -> None:
        """Refused without the cookie, the script retries with a backoff and gets appr once it is set."""
        driver = open_browser(self)
        groupware = StaticPages(self, "127.0.0.1")
        server = Server(
            self, local={"sse": {"header": {"Access-Control-Allow-Origin": [groupware.origin]}}}
        ).start()
        groupware.pages["/header.html"] = groupware_page(server.port, None)

        driver.get(groupware.origin + "/header.html")
        server.wait_for_log(r"refused stream .* 401", timeout=WAIT, name="sse.log")
        # Same site (127.0.0.1, another port): the cookie goes along only
        # because the script opens the stream withCredentials.
        driver.execute_script("document.cookie = 'userID=gw-cookie-u2; path=/';")
        self._wait_connected(server, "gw-cookie-u2")
        status, doc = server.post('id=appr_gw-cookie-u2&data={"doc":"A-1"}', FORM)
        self.assertEqual((status, doc["delivered"]), (200, 1))
        approvals = wait_for(
            driver,
            lambda d: d.execute_script("return window.approvals"),
            "sancProcess to be called",
        )
        self.assertEqual([json.loads(a) for a in approvals], [{"doc": "A-1"}])
        self.assertEqual(driver.execute_script("return window.received"), [])

    def test_reconnect_replays_and_resets(self) -> None:
        """
        The browser's own reconnect: after a restart it sends Last-Event-ID
        and gets what was published meanwhile; after a restart that lost the
        history, onNotificatorReset is called and notifications go on.
        """
        driver = open_browser(self)
        groupware = StaticPages(self, "127.0.0.2")
        local = {
            # A retry long enough that the browser is not back before the
            # publish that must reach it by replay (checked below).
            "sse": {"retry": 4000, "header": {"Access-Control-Allow-Origin": [groupware.origin]}}
        }
        server = Server(self, local=local, listen=f"tcp:{free_port()}:interface=127.0.0.1").start()
        groupware.pages["/header.html"] = groupware_page(server.port, "re1")
        driver.get(groupware.origin + "/header.html")
        self._wait_connected(server, "re1")
        self.assertEqual(server.post("id=notify_re1&data=1", FORM)[0], 200)
        wait_for(driver, lambda d: d.execute_script("return window.received.length") == 1, "n1")
        # Restarted with the history on disk: published before the browser is back.
        server.restart()
        self.assertFalse(connected(server, "re1"))
        self.assertEqual(server.post("id=notify_re1&data=2", FORM)[0], 200)
        wait_for(driver, lambda d: d.execute_script("return window.received.length") == 2, "n2")
        server.wait_for_log(r"opened for re1 .*; replay complete: 1 notifications", name="sse.log")
        self.assertEqual(driver.execute_script("return window.received"), ["1", "2"])
        self.assertEqual(driver.execute_script("return window.resets"), [])
        # Restarted with a history in memory only: the browser's id is from a lost history.
        server.restart({**local, "sse": {**local["sse"], "history": {"dir": None}}})
        resets = wait_for(driver, lambda d: d.execute_script("return window.resets"), "reset")
        self.assertEqual(resets[0]["reason"], "lost")
        self._wait_connected(server, "re1")
        self.assertEqual(server.post("id=notify_re1&data=3", FORM)[0], 200)
        wait_for(driver, lambda d: d.execute_script("return window.received.length") == 3, "n3")
        self.assertEqual(driver.execute_script("return window.received"), ["1", "2", "3"])

    def test_a_page_that_got_nothing_misses_nothing_across_a_restart(self) -> None:
        """
        Chromium's EventSource keeps the id of the connect event: a page that
        received no notification yet reconnects after a restart with it as
        Last-Event-ID, and gets what was published while it was away, once.
        """
        driver = open_browser(self)
        groupware = StaticPages(self, "127.0.0.2")
        local = {
            # A retry long enough that the browser is not back before the publish.
            "sse": {"retry": 4000, "header": {"Access-Control-Allow-Origin": [groupware.origin]}}
        }
        server = Server(self, local=local, listen=f"tcp:{free_port()}:interface=127.0.0.1").start()
        groupware.pages["/header.html"] = groupware_page(server.port, "re2")
        driver.get(groupware.origin + "/header.html")
        self._wait_connected(server, "re2")
        server.restart()
        self.assertFalse(connected(server, "re2"))
        self.assertEqual(server.post("id=notify_re2&data=1", FORM)[0], 200)
        wait_for(driver, lambda d: d.execute_script("return window.received.length") == 1, "n1")
        server.wait_for_log(r"opened for re2 .*; replay complete: 1 notifications", name="sse.log")
        self.assertEqual(server.post("id=notify_re2&data=2", FORM)[0], 200)
        wait_for(driver, lambda d: d.execute_script("return window.received.length") == 2, "n2")
        self.assertEqual(driver.execute_script("return window.received"), ["1", "2"])
        self.assertEqual(driver.execute_script("return window.resets"), [])

    def _wait_connected(self, server: Server, user_id: str) -> None:
        wait_until(
            lambda: connected(server, user_id),
            WAIT,
            lambda: f"{user_id!r} connected:\n{server.log()}",
            interval=0.1,
        )
