/*
 * Notificator groupware client: keeps one EventSource open to the
 * Notificator server and hands notifications to the page.
 *
 * Add to the groupware header page (one line; the server's own URL):
 *
 *   <script src="https://sse.example.com:3443/javascripts/eventSourceClient.js"
 *           data-user-id="001000210"></script>
 *
 *   data-user-id    connect to /sse/<userId>; without it, /sse is used and the
 *                   server reads the user id from its cookie (sse.cookie).
 *   data-server     the server's base URL (default: where this script came from).
 *   data-debug      "false" silences the console log.
 *   data-autoconnect  "false" waits for NotificatorClient.connect({...}).
 *
 * Events: "notify" calls window.webNotifyProcess(data) and "appr" calls
 * window.sancProcess(data) when the page defines them (data is the JSON
 * text sent by the publisher); "connect" and "heartbeat" are logged.
 * "reset" (after a reconnect, the server could not replay everything the
 * page missed: it was away longer than the server keeps notifications,
 * or the server lost them) calls window.onNotificatorReset(info) when the
 * page defines it, with info the parsed object {reason, message,
 * lastEventId, oldestEventId}: reload the notification list there.  The
 * notifications the server still kept follow the reset as usual.
 *
 * Reconnecting: the browser reconnects by itself after a dropped
 * connection (the server sends "retry:").  It gives up for good
 * (readyState CLOSED) after an HTTP error or a wrong content type (a 401
 * without the cookie, a proxy's 502 page); then this script opens a new
 * EventSource after a backoff of 1 s, 2 s, 4 s ... up to 60 s.
 *
 * Plain ES5 on purpose: groupware pages are old.  ASCII only, so it loads
 * right from pages in any charset.
 */
(function (window, document) {
  "use strict";

  var script = document.currentScript || (function () {
    var all = document.getElementsByTagName("script");
    return all[all.length - 1];
  })();

  function attr(name) {
    return script && script.getAttribute ? script.getAttribute(name) : null;
  }

  function baseOf(src) {
    // https://host:3443/javascripts/eventSourceClient.js?v=1 -> https://host:3443/
    return (src || "").split(/[?#]/)[0].replace(/javascripts\/[^\/]*$/, "");
  }

  var settings = {
    server: attr("data-server") || baseOf(script && script.src),
    userId: attr("data-user-id"),
    debug: attr("data-debug") !== "false",
    minDelay: 1000,
    maxDelay: 60000
  };
  var source = null;
  var timer = null;
  var failures = 0;

  function log() {
    if (settings.debug && window.console && window.console.log) {
      var args = Array.prototype.slice.call(arguments);
      args.unshift("[notificator]");
      window.console.log.apply(window.console, args);
    }
  }

  function streamUrl() {
    var base = settings.server.replace(/\/*$/, "/");
    return settings.userId ? base + "sse/" + encodeURIComponent(settings.userId) : base + "sse";
  }

  function dispatch(handlerName, event) {
    var handler = window[handlerName];
    if (typeof handler !== "function") {
      log(event.type + " received but the page has no " + handlerName + "()", event.data);
      return;
    }
    try {
      handler(event.data);
    } catch (err) {
      if (window.console && window.console.error) {
        window.console.error("[notificator] " + handlerName + "() failed", err);
      }
    }
  }

  function open() {
    timer = null;
    var url = streamUrl();
    var es = new window.EventSource(url, { withCredentials: true });
    source = es;
    es.addEventListener("open", function () {
      failures = 0;
      log("open", url);
    });
    es.addEventListener("connect", function (e) {
      failures = 0;
      log("connect", e.data);
    });
    es.addEventListener("heartbeat", function (e) {
      log("heartbeat", e.data);
    });
    es.addEventListener("notify", function (e) {
      dispatch("webNotifyProcess", e);
    });
    es.addEventListener("appr", function (e) {
      dispatch("sancProcess", e);
    });
    es.addEventListener("reset", function (e) {
      log("reset", e.data);
      var hook = window.onNotificatorReset;
      if (typeof hook !== "function") return;
      var info = null;
      try {
        info = JSON.parse(e.data);
      } catch (err) {
        info = { reason: "unknown", message: String(e.data) };
      }
      try {
        hook(info);
      } catch (err) {
        if (window.console && window.console.error) {
          window.console.error("[notificator] onNotificatorReset() failed", err);
        }
      }
    });
    es.addEventListener("error", function () {
      if (es !== source) return;
      if (es.readyState === 2) {
        // CLOSED: the browser will not try again (HTTP error, bad type).
        es.close();
        retryLater();
      } else {
        log("connection lost; the browser is reconnecting");
      }
    });
  }

  function retryLater() {
    failures += 1;
    var delay = Math.min(settings.maxDelay, settings.minDelay * Math.pow(2, failures - 1));
    delay = Math.round(delay * (0.8 + Math.random() * 0.4));
    log("stream closed; reconnecting in " + delay + " ms");
    timer = window.setTimeout(open, delay);
  }

  function close() {
    if (timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
    if (source) {
      var es = source;
      source = null;
      es.close();
    }
  }

  function connect(options) {
    close();
    if (options) {
      for (var key in options) {
        if (Object.prototype.hasOwnProperty.call(options, key)) settings[key] = options[key];
      }
    }
    if (!window.EventSource) {
      log("this browser has no EventSource: notifications are off");
      return;
    }
    failures = 0;
    open();
  }

  // Back online after a network change: do not wait for the backoff.
  if (window.addEventListener) {
    window.addEventListener("online", function () {
      if (timer !== null) {
        window.clearTimeout(timer);
        open();
      }
    });
  }

  window.NotificatorClient = {
    connect: connect,
    close: close,
    source: function () { return source; },
    url: streamUrl
  };

  if (attr("data-autoconnect") !== "false") connect();
})(window, document);
