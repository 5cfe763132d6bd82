// A live console (run pages and image build pages): one EventSource carries log lines and status changes.
// Lines are inserted as text (never HTML). The view follows the tail unless the user scrolls up.
// Without EventSource (or when the server says live updates are unavailable) it polls the log file.
// A console without data-events-url has ended: its stored log is on the page, scrolled to the end.
(function () {
  "use strict";
  const consoleEl = document.getElementById("console");
  if (!consoleEl) return;
  if (!consoleEl.dataset.eventsUrl) {
    consoleEl.scrollTop = consoleEl.scrollHeight;
    return;
  }
  const followBtn = document.getElementById("follow");
  const stateEl = document.getElementById("log-state");
  const MAX_LINES = 10000;
  let following = true;
  let lineCount = 0;

  function atBottom() {
    return consoleEl.scrollHeight - consoleEl.scrollTop - consoleEl.clientHeight < 40;
  }
  consoleEl.addEventListener("scroll", function () {
    following = atBottom();
    followBtn.hidden = following;
  });
  followBtn.addEventListener("click", function () {
    following = true;
    followBtn.hidden = true;
    consoleEl.scrollTop = consoleEl.scrollHeight;
  });

  function append(lines) {
    const fragment = document.createDocumentFragment();
    for (const item of lines) {
      const span = document.createElement("span");
      span.className = item[0] === "err" ? "line err" : "line";
      span.textContent = item[1] + "\n";
      fragment.appendChild(span);
    }
    consoleEl.appendChild(fragment);
    lineCount += lines.length;
    while (lineCount > MAX_LINES && consoleEl.firstChild) {
      consoleEl.removeChild(consoleEl.firstChild);
      lineCount -= 1;
    }
    if (following) consoleEl.scrollTop = consoleEl.scrollHeight;
  }

  function statusChanged(status) {
    document.body.dispatchEvent(new CustomEvent("studio:status", { detail: { status: status } }));
  }

  function finished() {
    stateEl.textContent = "ended";
    const cancel = document.getElementById("cancel-form");
    if (cancel) cancel.remove();
    // The stored outputs (or the built image's details) and the final log appear with the full page.
    setTimeout(function () { window.location.reload(); }, 300);
  }

  function poll() {
    window.studioLive = false;
    stateEl.textContent = "live (polling)";
    let offset = 0;
    const url = consoleEl.dataset.logUrl;
    function tick() {
      fetch(url + "?offset=" + offset, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          append(data.lines.map(function (t) { return ["out", t]; }));
          const moved = data.next_offset !== offset;
          offset = data.next_offset;
          if (data.final && !moved) { statusChanged(data.status); finished(); return; }
          setTimeout(tick, moved ? 50 : 1000);
        })
        .catch(function () { setTimeout(tick, 2000); });
    }
    tick();
  }

  function connect() {
  if (!window.EventSource) { poll(); return; }
  window.studioLive = true;
  const source = new EventSource(consoleEl.dataset.eventsUrl);
  source.addEventListener("log", function (e) { append(JSON.parse(e.data).lines); });
  source.addEventListener("status", function (e) { statusChanged(JSON.parse(e.data).status); });
  // The run's own events (runs/live.py): new metric data, tags, a child run that changed. Pages listen on <body>.
  ["metric", "tags", "child"].forEach(function (name) {
    source.addEventListener(name, function (e) {
      document.body.dispatchEvent(new CustomEvent("studio:" + name, { detail: JSON.parse(e.data) }));
    });
  });
  source.addEventListener("truncated", function () {
    append([["out", "[earlier lines are in the full log]"]]);
  });
  source.addEventListener("end", function () { source.close(); finished(); });
  source.addEventListener("unavailable", function () { source.close(); consoleEl.textContent = ""; lineCount = 0; poll(); });
  }

  // Connect once htmx has set up the page's triggers (its DOMContentLoaded handler was registered first): a status
  // change replayed at once would otherwise reach the summary before it listens, and the badge would lag behind.
  // This file is a deferred script, so it runs before DOMContentLoaded.
  if (document.readyState === "complete") {
    connect();
  } else {
    document.addEventListener("DOMContentLoaded", connect, { once: true });
  }
})();
