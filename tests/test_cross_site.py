"""
A web page on another site as the attacker (issue 17, items 1 and 5): real
headless Chromium (as in L{tests.test_browser}) in front of the real
C{twistd -n notificator}, with the attacker's pages served from another
loopback origin.

 - Reading: a page on another site opens C{/sse/alice?lastEventId=1-0}
   with the victim's credentials; it reads nothing, by default and with
   C{"*"} (which lets it read only without credentials), while a listed
   origin reads as before.
 - Publishing: a form or script on another site, opened by a browser on a
   host that may publish (here: loopback), is refused 403 and publishes
   nothing, also with C{"*"}; the server's own pages (the monitor's
   connection test, directly and behind the shipped nginx block) and a
   listed origin still publish.
 - Start-up in production warns of C{"*"} and of a null
   C{sse.auth.secret}, and a refused page's publish is answered before its
   body is read (raw sockets, no browser).

In CI a missing browser or nginx fails these tests; elsewhere they skip
with the reason.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from tests.support import PROJECT, Server, raw_request, stock_channel, wait_until
from tests.test_browser import WAIT, StaticPages, open_browser, wait_for

FORM = "application/x-www-form-urlencoded"
ALICE_DATA = {"title": "급여 명세서", "amount": 4200000}


def published(server: Server) -> float:
    """C{notificator_published_total} from C{/metrics}."""
    status, _, body = server.request("GET", "/metrics")
    assert status == 200, body
    m = re.search(rb"^notificator_published_total (\S+)$", body, re.M)
    assert m is not None, body
    return float(m.group(1))


def cors(*origins: str) -> dict[str, Any]:
    """A local.json allowing these origins (none: the shipped default)."""
    sse: dict[str, Any] = {"heartbeat": False, "keepalive": 0}
    if origins:
        sse["header"] = {"Access-Control-Allow-Origin": list(origins)}
    return {"sse": sse}


def reader_page(server_port: int, credentials: bool) -> str:
    """
    The attacker's page: an EventSource and a fetch on alice's stream from
    the first event id, keeping what they read in C{window.got}.
    """
    url = f"http://127.0.0.1:{server_port}/sse/alice?lastEventId=1-0"
    with_credentials = "true" if credentials else "false"
    fetch_credentials = "include" if credentials else "omit"
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>evil</title><script>
window.got = []; window.state = "connecting"; window.fetched = "pending";
var es = new EventSource("{url}", {{withCredentials: {with_credentials}}});
["connect", "notify", "message"].forEach(function (name) {{
  es.addEventListener(name, function (e) {{ window.got.push(name + " " + e.data); }});
}});
es.onopen = function () {{ window.state = "open"; }};
es.onerror = function () {{ window.state = es.readyState === 2 ? "closed" : "retrying"; }};
fetch("{url}", {{mode: "cors", credentials: "{fetch_credentials}"}})
  .then(function (r) {{ return r.body.getReader().read(); }})
  .then(function (chunk) {{
    window.fetched = "read";
    window.got.push("fetch " + new TextDecoder().decode(chunk.value));
  }})
  .catch(function (e) {{ window.fetched = "refused: " + e; }});
</script></head><body>evil</body></html>"""


def form_page(action: str, fields: dict[str, str], no_referrer: bool = False) -> str:
    """The attacker's page: a form that posts itself to C{action} (with no_referrer: Origin null)."""
    meta = '<meta name="referrer" content="no-referrer">' if no_referrer else ""
    inputs = "".join(
        f'<input type="hidden" name="{name}" value="{value.replace(chr(34), "&quot;")}">'
        for name, value in fields.items()
    )
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8">{meta}<title>evil</title></head>
<body><form id="f" method="post" action="{action}">{inputs}</form>
<script>document.getElementById("f").submit();</script></body></html>"""


def fetch_page(url: str, body: str, content_type: str, credentials: str = "include") -> str:
    """A page that publishes with fetch (CORS mode) and keeps the answer in C{window.answer}."""
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>page</title><script>
window.answer = "pending";
fetch("{url}", {{method: "POST", mode: "cors", credentials: "{credentials}",
  headers: {{"Content-Type": "{content_type}"}}, body: {json.dumps(body)}}})
  .then(function (r) {{ return r.text().then(function (t) {{ window.answer = r.status + " " + t; }}); }})
  .catch(function (e) {{ window.answer = "refused: " + e; }});
</script></head><body>page</body></html>"""


class CrossSiteReadTests(SynchronousTestCase):
    """Item 1: a page on another site cannot read a user's stream."""

    def setUp(self) -> None:
        self.driver = open_browser(self)
        self.evil = StaticPages(self, "127.0.0.2")

    def start(self, local: dict[str, Any]) -> Server:
        server = Server(self, local=local).start()
        # An hour of alice's history for the attacker to ask for.
        status, reply = server.post(
            "id=notify_alice&data=" + quote(json.dumps(ALICE_DATA, ensure_ascii=False)), FORM
        )
        assert status == 200, reply
        return server

    def read_as_attacker(self, server: Server, credentials: bool) -> tuple[list[str], str, str]:
        """Open the attacker's page; what it read once its EventSource and fetch are done."""
        self.evil.pages["/read.html"] = reader_page(server.port, credentials)
        self.driver.get(self.evil.origin + "/read.html")
        # The server did answer: the browser is what keeps the page from reading.
        server.wait_for_log(
            r"opened for alice from 127\.0\.0\.1 .*; replay (complete|truncated): 1 notifications",
            timeout=WAIT,
            name="sse.log",
        )
        wait_for(
            self.driver,
            lambda d: d.execute_script(
                "return window.fetched !== 'pending' && (window.state === 'closed'"
                " || window.got.length > 1)"
            ),
            "the attacker's EventSource and fetch to end or read",
        )
        got, state, fetched = self.driver.execute_script(
            "return [window.got, window.state, window.fetched]"
        )
        return got, state, fetched

    def test_other_site_reads_nothing_by_default(self) -> None:
        """With the shipped CORS setting, another site's page reads nothing of alice's stream."""
        server = self.start(cors())
        got, state, fetched = self.read_as_attacker(server, credentials=True)
        self.assertEqual(got, [])
        self.assertEqual(state, "closed")
        self.assertTrue(fetched.startswith("refused: TypeError"), fetched)
        stream = server.subscribe("/sse/alice", {"Origin": self.evil.origin})
        self.assertIsNone(stream.headers["Access-Control-Allow-Origin"])

    def test_star_is_read_only_without_credentials(self) -> None:
        """
        With "*", a page on another site that asks for the user's cookies
        (as the groupware's script does) reads nothing; only an anonymous read
        works, which is what "*" means (and why production warns of it).
        """
        server = self.start(cors("*"))
        got, state, fetched = self.read_as_attacker(server, credentials=True)
        self.assertEqual(got, [])
        self.assertEqual(state, "closed")
        self.assertTrue(fetched.startswith("refused: TypeError"), fetched)
        stream = server.subscribe("/sse/alice", {"Origin": self.evil.origin})
        self.assertEqual(stream.headers["Access-Control-Allow-Origin"], "*")
        self.assertIsNone(stream.headers["Access-Control-Allow-Credentials"])
        # Anonymous: "*" lets any page read (no cookie goes along).
        self.driver.get("about:blank")
        got, _, fetched = self.read_as_attacker(server, credentials=False)
        self.assertEqual(fetched, "read")
        self.assertTrue(any(g.startswith("connect ") for g in got), got)

    def test_listed_origin_reads_with_credentials(self) -> None:
        """A listed origin reads alice's stream and replay with credentials, as before."""
        server = self.start(cors(self.evil.origin))
        got, state, fetched = self.read_as_attacker(server, credentials=True)
        self.assertEqual(state, "open")
        self.assertEqual(fetched, "read")
        self.assertTrue(any(g.startswith("connect ") for g in got), got)
        wait_for(
            self.driver,
            lambda d: any(g.startswith("notify ") for g in d.execute_script("return window.got")),
            "the replayed notification",
        )
        notify = [
            g for g in self.driver.execute_script("return window.got") if g.startswith("notify ")
        ]
        self.assertEqual(json.loads(notify[0][len("notify ") :]), ALICE_DATA)


class CrossSitePublishTests(SynchronousTestCase):
    """Item 5: a form or script on another site does not publish."""

    def attack(self, server: Server, pages: StaticPages, driver: Any) -> None:
        """Three pages of another site post to alice's id: a form, a no-referrer form, a fetch."""
        action = f"http://127.0.0.1:{server.port}/webNotification"
        fields = {"id": "notify_alice", "data": '{"title":"퇴사 처리되었습니다"}'}
        pages.pages["/form.html"] = form_page(action, fields)
        pages.pages["/null.html"] = form_page(action, fields, no_referrer=True)
        pages.pages["/fetch.html"] = fetch_page(
            action, "id=notify_alice&data=1", FORM, credentials="include"
        )
        for page in ("/form.html", "/null.html", "/fetch.html"):
            driver.get(pages.origin + page)
        wait_until(
            lambda: server.log("sse.log").count("403 origin not allowed") >= 3,
            WAIT,
            lambda: "three refused publishes in sse.log:\n" + server.log("sse.log"),
        )

    def test_cross_site_posts_are_refused(self) -> None:
        """
        A browser on loopback (an allowed publisher address) opens pages of
        another site that post to /webNotification: each is 403 and logged
        with its origin (null included), and alice receives nothing; with
        "*" configured too.
        """
        driver = open_browser(self)
        evil = StaticPages(self, "127.0.0.2")
        for local in (cors(), cors("*")):
            server = Server(self, local=local).start()
            alice = server.subscribe("/sse/alice")
            self.assertEqual(alice.next_event()["event"], "connect")
            self.attack(server, evil, driver)
            log = server.log("sse.log")
            self.assertIn(f"origin not allowed: {evil.origin} is not listed", log)
            self.assertIn("origin not allowed: null is not listed", log)
            self.assertEqual(published(server), 0)
            # The publisher that is no browser (no Origin) still publishes,
            # and that is the next thing alice gets: nothing came before it.
            self.assertEqual(server.post("id=notify_alice&data=1", FORM)[1]["delivered"], 1)
            self.assertEqual(alice.next_event()["data"], "1")
            server.stop()

    def test_named_hosts_without_fetch_metadata(self) -> None:
        """
        Over plain http to a host name, Chromium sends no Sec-Fetch-Site: the
        monitor page's connection test (same origin) publishes, a form on
        another site does not.
        """
        rules = "MAP sse.test 127.0.0.1, MAP gw.test 127.0.0.2"
        driver = open_browser(self, flags=[f"--host-resolver-rules={rules}"])
        server = Server(self, local=cors()).start()
        driver.get(f"http://sse.test:{server.port}/")
        user = driver.find_element("id", "test-user")
        user.clear()
        user.send_keys("alice")
        driver.find_element("id", "connect").click()
        wait_for(
            driver,
            lambda d: d.find_element("id", "stream-state").get_attribute("data-state") == "open",
            "the test stream to open",
        )
        driver.find_element("id", "send").click()
        wait_for(
            driver,
            lambda d: "delivered to 1 stream" in d.find_element("id", "send-status").text,
            "the connection test's publish",
        )
        gw = StaticPages(self, "127.0.0.2")
        action = f"http://sse.test:{server.port}/webNotification"
        gw.pages["/form.html"] = form_page(action, {"id": "notify_alice", "data": "1"})
        driver.get(gw.origin.replace("127.0.0.2", "gw.test") + "/form.html")
        server.wait_for_log(
            r"403 origin not allowed: http://gw\.test:\d+ is not listed",
            timeout=WAIT,
            name="sse.log",
        )
        self.assertEqual(published(server), 1)

    def test_listed_origin_publishes_with_a_preflight(self) -> None:
        """
        A listed origin's page publishes with fetch (a simple form post, and
        JSON after a preflight) and reads the answer; an unlisted one's JSON
        publish fails at its preflight.
        """
        driver = open_browser(self)
        gw = StaticPages(self, "127.0.0.2")
        evil = StaticPages(self, "127.0.0.2")
        server = Server(self, local=cors(gw.origin)).start()
        alice = server.subscribe("/sse/alice")
        alice.next_event()
        url = f"http://127.0.0.1:{server.port}/webNotification"
        body = json.dumps({"id": "notify_alice", "data": {"n": 2}})
        gw.pages["/form.html"] = fetch_page(url, "id=notify_alice&data=1", FORM)
        gw.pages["/json.html"] = fetch_page(url, body, "application/json")
        evil.pages["/json.html"] = fetch_page(url, body, "application/json")
        for page, data in (("/form.html", "1"), ("/json.html", '{"n":2}')):
            driver.get(gw.origin + page)
            answer = wait_for(
                driver,
                lambda d: d.execute_script(
                    "return window.answer !== 'pending' ? window.answer : null"
                ),
                f"{page}'s answer",
            )
            status, _, text = answer.partition(" ")
            self.assertEqual((status, json.loads(text)["delivered"]), ("200", 1), answer)
            self.assertEqual(alice.next_event()["data"], data)
        server.wait_for_log(r'"OPTIONS /webNotification HTTP/1.1" 204 ', name="access.log")
        driver.get(evil.origin + "/json.html")
        answer = wait_for(
            driver,
            lambda d: d.execute_script("return window.answer !== 'pending' ? window.answer : null"),
            "the unlisted page's answer",
        )
        self.assertTrue(answer.startswith("refused: TypeError"), answer)
        server.wait_for_log(r'"OPTIONS /webNotification HTTP/1.1" 403 ', name="access.log")
        self.assertEqual(published(server), 2)
        alice.nothing_more(0.3)

    def test_monitor_page_behind_the_shipped_nginx_block(self) -> None:
        """
        Through the shipped nginx block (https, HTTP/2, Host passed on), the
        monitor page's connection test still publishes, and a form on another
        site does not.
        """
        from tests.test_contrib import NginxBlock
        from tests.tlssupport import Certs

        driver = open_browser(self, flags=["--ignore-certificate-errors"])
        local = cors()
        local["server"] = {"trustedProxies": ["127.0.0.1/32", "::1/128"]}
        server = Server(self, local=local).start()
        nginx = NginxBlock(self, server.port, Certs(self))
        process = subprocess.Popen(
            nginx.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.send_signal, signal.SIGTERM)

        def accepts() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", nginx.port), timeout=1):
                    return True
            except OSError:
                self.assertIsNone(process.poll(), "nginx exited")
                return False

        wait_until(accepts, 10, "nginx listening")
        base = f"https://localhost:{nginx.port}"
        driver.get(base + "/")
        user = driver.find_element("id", "test-user")
        user.clear()
        user.send_keys("alice")
        driver.find_element("id", "connect").click()
        wait_for(
            driver,
            lambda d: d.find_element("id", "stream-state").get_attribute("data-state") == "open",
            "the test stream to open through nginx",
        )
        driver.find_element("id", "send").click()
        wait_for(
            driver,
            lambda d: "delivered to 1 stream" in d.find_element("id", "send-status").text,
            "the connection test's publish through nginx",
        )
        evil = StaticPages(self, "127.0.0.2")
        evil.pages["/form.html"] = form_page(
            base + "/webNotification", {"id": "notify_alice", "data": "1"}
        )
        driver.get(evil.origin + "/form.html")
        server.wait_for_log(
            r"403 origin not allowed: http://127\.0\.0\.2:\d+ is not listed",
            timeout=WAIT,
            name="sse.log",
        )
        self.assertEqual(published(server), 1)


class StartUpAndGateTests(SynchronousTestCase):
    """No browser: the production warnings, and the gate answering before the body."""

    def test_production_warns_of_star_and_of_no_secret(self) -> None:
        """--env production with "*" and no secret: one warning line each at start-up."""
        with open(os.path.join(PROJECT, "conf", "default.json"), encoding="utf-8") as f:
            default = f.read()
        production = {
            "server": {"protocol": "http"},
            "sse": {"header": {"Access-Control-Allow-Origin": "*"}},
        }
        server = Server(
            self,
            conf_files={"default": default, "production": production},
            args=["--env", "production"],
        ).start()
        log = server.log()
        lines = [line for line in log.splitlines() if "config: " in line]
        self.assertEqual(len(lines), 2, log)
        self.assertRegex(
            lines[0],
            r"#warn\] config: \S+production\.json: sse\.header\.Access-Control-Allow-Origin: \"\*\""
            r" lets a page on any web site read any user's stream .*; list the groupware's"
            r" origins instead",
        )
        self.assertRegex(
            lines[1],
            r"#warn\] config: \S+default\.json: sse\.auth\.secret: null, so anyone who reaches the"
            r" server can open any user's stream; set a long random secret",
        )

    def test_refused_page_answered_before_its_body(self) -> None:
        """A publish from another origin that announces 64 MiB is answered 403 after its head."""
        server = Server(self, local=cors()).start()
        reply = raw_request(
            server.port,
            b"POST /webNotification HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 67108864\r\n\r\nid=notify_u1&data=1",
            timeout=5,
        )
        self.assertTrue(reply.startswith(b"HTTP/1.1 403 Forbidden\r\n"), reply[:300])
        self.assertIn(b'{"error": "origin not allowed"}', reply)
        self.assertEqual(published(server), 0)
        channel = "stock" if stock_channel() else "fast"
        server.wait_for_log(r"403 origin not allowed: https://evil\.example", name="sse.log")
        self.assertNotIn("Traceback", server.log() + server.log("sse.log"), channel)
