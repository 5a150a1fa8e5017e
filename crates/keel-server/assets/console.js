// Keel console: progressive enhancement of server-rendered pages. Everything works without
// this script; with it, counts and lists update live from /api/owner/realtime (falling back to
// a 10 s refresh when the socket fails), times show in the browser's time zone, JSON can be
// copied, and destructive buttons ask first.
(function () {
  "use strict";

  var fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit"
  });
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      if (t.dataset.local) return;
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      t.textContent = fmt.format(d);
      t.title = d.toISOString() + " (" + zone + ": " + d.toString() + ")";
      t.dataset.local = "1";
    });
  }

  function setStatus(kind, text) {
    var s = document.getElementById("live-status");
    if (!s) return;
    s.hidden = false;
    s.className = "live-status " + kind;
    s.textContent = text;
    s.dataset.state = kind;
  }

  function esc(v) {
    return window.CSS && CSS.escape ? CSS.escape(v) : String(v).replace(/["\\]/g, "\\$&");
  }

  // Live counts: cells carry data-q (queue) and data-k (count name).
  function setCount(queue, key, value) {
    document.querySelectorAll('[data-q="' + esc(queue) + '"][data-k="' + esc(key) + '"]').forEach(function (el) {
      if (el.textContent !== String(value)) el.textContent = String(value);
    });
  }

  var live = document.body.dataset.live || "";

  function setCounts(queue, stats) {
    Object.keys(stats).forEach(function (k) {
      if (k === "paused") {
        var cells = document.querySelectorAll('[data-q="' + esc(queue) + '"][data-k="paused"]');
        cells.forEach(function (c) {
          if (c.dataset.paused !== String(stats.paused)) scheduleRefresh(0);
        });
      } else if (k !== "name" && k !== "tenant" && typeof stats[k] === "number") {
        setCount(queue, k, stats[k]);
      }
    });
  }

  function concerns(queue) {
    return live === "queue:" + queue || live === "runs" || live === "queues";
  }

  // Refreshing regions in place: the page is fetched again and each [data-region] replaced,
  // unless the user is working in it (a checked box, focus inside).
  var refreshTimer = null;
  var refreshing = false;
  function scheduleRefresh(delay) {
    if (refreshTimer) return;
    refreshTimer = setTimeout(function () { refreshTimer = null; refreshRegions(); }, delay);
  }

  function busyRegion(r) {
    return r.querySelector("input[type=checkbox]:checked") || r.contains(document.activeElement) && document.activeElement !== document.body;
  }

  function refreshRegions() {
    var regions = document.querySelectorAll("[data-region]");
    if (!regions.length || refreshing) return Promise.resolve();
    refreshing = true;
    regions.forEach(function (r) { r.setAttribute("aria-busy", "true"); });
    return fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (resp) {
        if (resp.redirected && /\/login/.test(resp.url)) { location.href = resp.url; return null; }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.text();
      })
      .then(function (text) {
        if (text === null) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        regions.forEach(function (r) {
          var fresh = doc.querySelector('[data-region="' + esc(r.dataset.region) + '"]');
          if (fresh && !busyRegion(r)) {
            r.innerHTML = fresh.innerHTML;
            localTimes(r);
          }
        });
        doc.querySelectorAll("[data-q][data-k]").forEach(function (el) {
          if (el.dataset.k !== "paused") setCount(el.dataset.q, el.dataset.k, el.textContent);
        });
        var note = document.getElementById("refresh-error");
        if (note) note.remove();
      })
      .catch(function (e) {
        var main = document.querySelector("main");
        var note = document.getElementById("refresh-error");
        if (!note && main) {
          note = document.createElement("p");
          note.id = "refresh-error";
          note.className = "flash flash-error";
          main.insertBefore(note, main.firstChild);
        }
        if (note) note.textContent = "Could not refresh this page (" + e.message + "); showing what was last loaded.";
      })
      .then(function () {
        refreshing = false;
        regions.forEach(function (r) { r.removeAttribute("aria-busy"); });
      });
  }

  // The socket, with a 10 s refresh while it is down and reconnection with backoff.
  var poll = null;
  var attempts = 0;
  function fallback(reason) {
    setStatus("fallback", reason + ": refreshing every 10 s");
    if (!poll) poll = setInterval(refreshRegions, 10000);
  }
  function connect() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var ws;
    try {
      ws = new WebSocket(proto + "//" + location.host + "/api/owner/realtime");
    } catch (e) {
      fallback("Live updates unavailable");
      return;
    }
    // Reachable for debugging (and the browser tests, which close it to see the fallback).
    window.keelConsole = { socket: ws };
    var opened = false;
    ws.onopen = function () {
      opened = true;
      attempts = 0;
      if (poll) { clearInterval(poll); poll = null; }
      setStatus("live", "● Live");
    };
    ws.onmessage = function (m) {
      var ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      if (ev.type === "snapshot" && ev.queues) {
        ev.queues.forEach(function (q) { setCounts(q.name, q); });
      } else if (ev.type === "queue_stats") {
        setCounts(ev.queue, ev.stats || {});
        if (concerns(ev.queue) && live !== "queues") scheduleRefresh(800);
      } else if (ev.type === "dlq_stats") {
        setCount(ev.queue, "dlq", ev.count);
      } else if (ev.type === "job_status") {
        if (concerns(ev.queue) && live !== "queues") scheduleRefresh(800);
      } else if (ev.type === "workflow_step" || ev.type === "workflow_instance") {
        if (live === "workflows" || live === "workflow:" + ev.instance_id) scheduleRefresh(800);
      } else if (ev.type === "ai_task") {
        if (live === "ai") scheduleRefresh(800);
      } else if (ev.type === "email_status") {
        if (live === "emails") scheduleRefresh(800);
      }
    };
    ws.onclose = function () {
      fallback(opened ? "Live updates lost" : "Live updates unavailable");
      attempts += 1;
      setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, attempts)));
    };
  }

  document.addEventListener("click", function (e) {
    var t = e.target.closest ? e.target.closest("[data-confirm],[data-copy],[data-select-all]") : null;
    if (!t) return;
    if (t.dataset.confirm !== undefined && t.dataset.confirm && !window.confirm(t.dataset.confirm)) {
      e.preventDefault();
    } else if (t.dataset.copy) {
      var src = document.getElementById(t.dataset.copy);
      var text = src ? src.textContent : "";
      var done = function () { t.textContent = "Copied"; setTimeout(function () { t.textContent = "Copy JSON"; }, 1500); };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, function () { copyFallback(text); done(); });
      } else { copyFallback(text); done(); }
    }
  });
  function copyFallback(text) {
    var ta = document.createElement("textarea");
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    ta.remove();
  }
  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("[data-select-all]")) {
      var form = e.target.form || document;
      form.querySelectorAll('input[name="ids"]').forEach(function (c) { c.checked = e.target.checked; });
    }
  });
  document.addEventListener("submit", function (e) {
    var form = e.target;
    form.querySelectorAll("[data-tz]").forEach(function (i) { i.value = String(new Date().getTimezoneOffset()); });
    setTimeout(function () {
      form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      form.setAttribute("aria-busy", "true");
    }, 0);
  });

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    document.querySelectorAll("[data-tz-note]").forEach(function (n) {
      n.textContent = "Dates are in your time zone (" + zone + ").";
    });
    if (live) connect();
  });
})();
