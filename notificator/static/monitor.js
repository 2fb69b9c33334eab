/* Notificator monitor page: the connected-user list (polled from "users"
 * and "health"), and a connection test (an EventSource as a chosen user and
 * a test POST to "webNotification").  All URLs are relative, so the page
 * also works behind a reverse proxy under a path prefix. */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var MAX_ROWS = 500;
  var MAX_EVENTS = 200;
  var KNOWN_EVENTS = ["connect", "heartbeat", "notify", "appr", "message"];

  var M = JSON.parse(document.getElementById("messages").textContent);
  var lang = document.documentElement.lang || "en";
  var $ = function (id) { return document.getElementById(id); };

  function t(key, values) {
    var text = M[key] || key;
    return text.replace(/\{(\w+)\}/g, function (all, name) {
      return values && name in values ? String(values[name]) : all;
    });
  }

  function formatTime(ms) {
    return new Date(ms).toLocaleString(lang);
  }

  function formatDuration(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var parts = { d: Math.floor(s / 86400), h: Math.floor(s / 3600) % 24,
                  m: Math.floor(s / 60) % 60, s: s % 60 };
    return t(parts.d ? "duration" : "duration_short", parts);
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  // -- connected users ------------------------------------------------------

  var lastUsers = [];
  var seen = {};
  var pollTimer = null;

  function renderUsers() {
    var filter = $("filter").value.trim().toLowerCase();
    var body = $("users").tBodies[0];
    var rows = document.createDocumentFragment();
    var shown = 0, hidden = 0, next = {};
    lastUsers.forEach(function (u) {
      next[u.userId] = true;
      if (filter && u.userId.toLowerCase().indexOf(filter) < 0) return;
      if (shown >= MAX_ROWS) { hidden++; return; }
      shown++;
      var tr = document.createElement("tr");
      tr.dataset.userId = u.userId;
      if (!seen[u.userId]) tr.className = "fresh";
      cell(tr, u.userId, "user");
      cell(tr, String(u.streams), "num");
      cell(tr, formatTime(u.connectedSince));
      cell(tr, u.remoteAddresses.join(", "));
      rows.appendChild(tr);
    });
    seen = next;
    body.replaceChildren(rows);
    $("no-users").hidden = lastUsers.length > 0;
    $("more-users").hidden = hidden === 0;
    $("more-users").textContent = t("more_users", { n: hidden });
  }

  function getJSON(url) {
    // "no-cache" revalidates with the ETag, so an unchanged list costs a 304.
    // The header marks a poll, which access.log leaves out unless the
    // operator sets monitor.accessLog.
    return fetch(url, { cache: "no-cache", credentials: "same-origin",
                        headers: { "X-Notificator-Monitor": "poll" } }).then(function (r) {
      if (!r.ok) throw new Error(r.status + " " + r.statusText);
      return r.json();
    });
  }

  function poll() {
    pollTimer = null;
    if (document.hidden) { schedule(); return; }
    Promise.all([getJSON("users"), getJSON("health")]).then(function (res) {
      var users = res[0], health = res[1];
      lastUsers = users.users;
      renderUsers();
      $("sum-users").textContent = health.users;
      $("sum-streams").textContent = health.streams;
      $("sum-published").textContent = health.published;
      $("sum-delivered").textContent = health.delivered;
      $("sum-rejected").textContent = health.rejected;
      $("sum-uptime").textContent = formatDuration(health.uptime);
      var status = $("poll-status");
      status.className = "status";
      status.textContent = t("updated", { time: new Date().toLocaleTimeString(lang) });
    }, function (err) {
      var status = $("poll-status");
      status.className = "status error";
      status.textContent = t("poll_error", { error: err.message });
    }).then(schedule);
  }

  function schedule() {
    if (pollTimer === null) pollTimer = setTimeout(poll, POLL_MS);
  }

  // -- connection test -------------------------------------------------------

  var source = null;
  var listening = {};

  function setState(state) {
    var el = $("stream-state");
    el.dataset.state = state;
    el.textContent = t("state_" + state);
    $("connect").textContent = source ? t("disconnect") : t("connect");
  }

  function logEvent(type, id, data) {
    var body = $("events").tBodies[0];
    var tr = document.createElement("tr");
    tr.className = "fresh";
    tr.dataset.event = type;
    cell(tr, new Date().toLocaleTimeString(lang));
    var name = cell(tr, type, "event");
    if (id) {
      var small = document.createElement("span");
      small.className = "id";
      small.textContent = id;
      name.appendChild(small);
    }
    cell(tr, data, "data");
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > MAX_EVENTS) body.deleteRow(-1);
    $("no-events").hidden = true;
  }

  function listen(name) {
    if (!source || listening[name]) return;
    listening[name] = true;
    source.addEventListener(name, function (e) {
      logEvent(e.type, e.lastEventId, e.data);
    });
  }

  function connect(user) {
    disconnect();
    source = new EventSource("sse/" + encodeURIComponent(user));
    listening = {};
    KNOWN_EVENTS.forEach(listen);
    listen($("test-event").value.trim());
    setState("connecting");
    source.onopen = function () {
      setState("open");
      logEvent("(open)", "", t("stream_open"));
    };
    source.onerror = function () {
      if (!source) return;
      var state = source.readyState;
      setState(state === EventSource.CLOSED ? "closed" : "connecting");
      logEvent("(error)", "", t("stream_error", { state: state }));
    };
  }

  function disconnect() {
    if (source) {
      source.close();
      source = null;
      setState("idle");
    }
  }

  function send() {
    var status = $("send-status");
    var event = $("test-event").value.trim();
    var user = $("test-user").value.trim();
    listen(event);
    var body = new URLSearchParams();
    body.set("id", event + "_" + user);
    body.set("data", $("test-data").value);
    status.className = "status";
    status.textContent = "…";
    fetch("webNotification", { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) {
        return r.json().then(function (j) {
          if (!r.ok) throw new Error(r.status + " " + (j.error || r.statusText));
          status.textContent = t(j.delivered === 1 ? "sent_one" : "sent",
                                 { eventId: j.eventId, n: j.delivered });
        });
      })
      .catch(function (err) {
        status.className = "status error";
        status.textContent = t("send_error", { error: err.message });
      });
  }

  // -- wiring ----------------------------------------------------------------

  $("test-data").value = M.default_data;
  $("filter").addEventListener("input", renderUsers);
  $("connect-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if (source) disconnect();
    else connect($("test-user").value.trim());
  });
  $("send-form").addEventListener("submit", function (e) {
    e.preventDefault();
    send();
  });
  $("clear").addEventListener("click", function () {
    $("events").tBodies[0].replaceChildren();
    $("no-events").hidden = false;
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && pollTimer !== null) {
      clearTimeout(pollTimer);
      poll();
    }
  });
  setState("idle");
  poll();
})();
