// hookgate console: draws each view from the JSON API (/api/v1). Everything that comes
// from a webhook sender is put in the page with textContent, never as HTML.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const view = document.getElementById("view");
  const POLL_MS = 2000;
  let timer = null;
  // The Overview's live stream (GET /api/v1/stream, server-sent events); polling when the
  // browser or the server cannot stream (too many streams open, a proxy in the way).
  let stream = null, streamFailed = false, streamed = null;

  function closeStream() { if (stream) { stream.close(); stream = null; } streamed = null; }

  function openStream() {
    if (stream || streamFailed || !window.EventSource) return;
    stream = new EventSource("/api/v1/stream");
    stream.addEventListener("stats", ev => {
      try { streamed = JSON.parse(ev.data); } catch (e) { return; }
      if (currentPage() === "overview") render();
    });
    stream.addEventListener("end", () => { closeStream(); window.location = "/console/login"; });
    stream.onerror = () => { closeStream(); streamFailed = true; if (currentPage() === "overview") render(); };
  }

  function currentPage() { return (window.location.hash.replace(/^#/, "") || "overview").split("/")[0]; }
  let selected = new Set();
  let selectedQ = new Set();

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }

  async function api(path, opts) {
    opts = opts || {};
    const headers = { "Accept": "application/json" };
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["X-CSRF-Token"] = csrf;
    }
    const r = await fetch("/api/v1/" + path, {
      method: opts.method || "GET",
      headers: headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      credentials: "same-origin",
    });
    if (r.status === 401) { window.location = "/console/login"; throw new Error("logged out"); }
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((data.error || r.status) + ": " + (data.message || ""));
    return data;
  }

  function table(id, caption, cols, rows) {
    const t = el("table", { id: id });
    t.append(el("caption", { text: caption }));
    const head = el("tr");
    for (const c of cols) head.append(el("th", { scope: "col", text: c }));
    t.append(el("thead", {}, head));
    const body = el("tbody");
    for (const r of rows) body.append(r);
    t.append(body);
    return t;
  }

  function row(cells, attrs) {
    const tr = el("tr", attrs || {});
    for (const c of cells) tr.append(c instanceof Node ? el("td", {}, c) : el("td", { text: c == null ? "" : String(c) }));
    return tr;
  }

  // A small chart of the last 15 minutes: accepted (or delivered) as bars, refused (or
  // failed) as a line. Labelled for screen readers with the totals it shows.
  function chart(series, label, names) {
    names = names || ["accepted", "refused"];
    const NS = "http://www.w3.org/2000/svg";
    const w = 180, h = 36;
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("role", "img");
    const a = series[names[0]], f = series[names[1]];
    const sumA = a.reduce((x, y) => x + y, 0), sumF = f.reduce((x, y) => x + y, 0);
    svg.setAttribute("aria-label", label + ": " + sumA + " " + names[0] + ", " + sumF + " " + names[1] + " in the last 15 minutes");
    const max = Math.max(1, ...a, ...f);
    const bw = w / a.length;
    a.forEach((v, i) => {
      if (!v) return;
      const r = document.createElementNS(NS, "rect");
      const bh = (v / max) * (h - 2);
      r.setAttribute("x", (i * bw).toFixed(1));
      r.setAttribute("y", (h - bh).toFixed(1));
      r.setAttribute("width", Math.max(1, bw - 0.5).toFixed(1));
      r.setAttribute("height", bh.toFixed(1));
      r.setAttribute("class", "bar");
      svg.append(r);
    });
    const pts = f.map((v, i) => ((i + 0.5) * bw).toFixed(1) + "," + (h - (v / max) * (h - 2)).toFixed(1)).join(" ");
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", pts);
    line.setAttribute("class", "refused-line");
    svg.append(line);
    return svg;
  }

  function rate(r) { return r["1m"] + " / " + r["5m"] + " / " + r["15m"]; }
  function health(ok, text) { return el("span", { class: ok ? "ok" : "bad", text: (ok ? "OK: " : "PROBLEM: ") + text }); }

  async function overview() {
    const s = streamed || await api("stats");
    const out = [el("h1", { text: "Overview" })];
    const rows = s.sources.map(src => row([
      src.name,
      String(src.totals.accepted),
      rate(src.rates_per_second.accepted),
      String(src.totals.duplicates),
      String(src.totals.refused),
      Object.entries(src.refused_by_reason).map(([k, v]) => k + " ×" + v).join(", ") || "none",
      String(src.totals.errors_5xx),
      chart(src.series, src.name),
    ], { "data-source": src.name }));
    out.push(table("sources-table", "Sources (rates per second over 1 / 5 / 15 minutes)",
      ["Source", "Accepted", "Accepted/s", "Duplicates", "Refused", "Refused by reason", "5xx", "Last 15 minutes"], rows));
    const hl = el("ul", { id: "health" });
    hl.append(el("li", {}, "Log: ", health(s.log.ready && s.log.status === "ok", s.log.status)));
    if (s.log.kafka) hl.append(el("li", {}, "Kafka: ", health(s.log.kafka.ready, s.log.kafka.ready ? "reachable" : "not reachable"),
      " — delivery p50 " + ms(s.log.kafka.delivery_seconds.p50) + ", p99 " + ms(s.log.kafka.delivery_seconds.p99)));
    if (s.log.spool) hl.append(el("li", {}, "Spool: ", health(!s.log.spool.full, s.log.spool.full ? "full" : "accepting"),
      " — " + s.log.spool.bytes + " bytes, fsync p50 " + ms(s.log.spool.fsync_seconds.p50) + ", p99 " + ms(s.log.spool.fsync_seconds.p99)));
    hl.append(el("li", {}, "Dispatcher: " + (s.dispatcher.routes ? s.dispatcher.routes + " route(s), lag " + (s.dispatcher.lag == null ? (s.dispatcher.spool_consumer_lag_bytes == null ? "n/a" : s.dispatcher.spool_consumer_lag_bytes + " bytes") : s.dispatcher.lag) : "no routes")));
    for (const r of s.dispatcher.remote || []) hl.append(el("li", { "data-dispatcher": r.url }, "Dispatcher process " + r.url + ": ",
      health(r.up, r.up ? "metrics read" : "unreachable"), r.error ? " — " + r.error : ""));
    hl.append(el("li", {}, "Dead letters: ", typeof s.dead_letters === "number" ? health(s.dead_letters === 0, String(s.dead_letters) + " pending") : el("span", { text: s.dead_letters == null ? "n/a" : JSON.stringify(s.dead_letters) })));
    if (s.quarantine != null) hl.append(el("li", {}, "Quarantine: ", health(s.quarantine === 0, s.quarantine + " event(s)")));
    out.push(el("h2", { text: "Health" }), hl);
    const sinks = s.sinks.map(k => row([k.name, Object.entries(k.deliveries).map(([o, n]) => o + " ×" + n).join(", ") || "none yet",
      rate(k.rates_per_second.ok), rate(k.rates_per_second.failed_retriable), rate(k.rates_per_second.failed_permanent),
      rate(k.rates_per_second.dead_lettered),
      ms(k.latency_seconds.p50) + " / " + ms(k.latency_seconds.p99),
      chart(k.series, k.name, ["ok", "failed"])], { "data-sink": k.name }));
    out.push(table("sinks-table", "Sinks (rates per second over 1 / 5 / 15 minutes)",
      ["Sink", "Deliveries since start", "Delivered/s", "Failed, retried/s", "Failed, permanent/s", "Dead-lettered/s", "Latency p50 / p99", "Last 15 minutes"], sinks));
    const lp = s.dispatcher.lag_peak;
    if (s.dispatcher.routes && lp) hl.append(el("li", {}, "Dispatcher lag peak over 1 / 5 / 15 minutes: " + [lp["1m"], lp["5m"], lp["15m"]].map(x => x == null ? "n/a" : String(x)).join(" / ")));
    return out;
  }

  function ms(x) { return x == null ? "n/a" : (x * 1000).toFixed(1) + " ms"; }

  let filters = { source: "", event: "", delivery_id: "" };

  async function events() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    q.set("limit", "200");
    const data = await api("events?" + q.toString());
    const form = el("form", { id: "event-filter", role: "search", onsubmit: ev => { ev.preventDefault(); for (const k of Object.keys(filters)) filters[k] = form.elements[k].value.trim(); render(); } });
    for (const [k, label] of [["source", "Source"], ["event", "Event type"], ["delivery_id", "Delivery id"]]) {
      form.append(el("label", { for: "f-" + k, text: label }), el("input", { id: "f-" + k, name: k, value: filters[k] }));
    }
    form.append(el("button", { type: "submit", text: "Filter" }));
    const rows = data.events.map(e => row([
      e.received_at, e.source, e.event_type, e.delivery_id, String(e.body_bytes),
      el("a", { href: "#events/" + e.id, class: "open", text: "Open " + e.id }),
    ], { "data-id": e.id }));
    return [el("h1", { text: "Events" }), form,
      table("events-table", "Recent accepted events, newest first (" + data.kept + " of at most " + data.capacity + " kept in memory)",
        ["Received", "Source", "Event type", "Delivery id", "Bytes", "Details"], rows)];
  }

  async function eventDetail(id) {
    const e = await api("events/" + encodeURIComponent(id));
    const out = [el("p", {}, el("a", { href: "#events", text: "← Back to events" })), el("h1", { text: "Event " + e.id })];
    const dl = el("dl", { id: "event-meta" });
    for (const [k, v] of [["Source", e.source], ["Provider", e.provider], ["Event type", e.event_type], ["Delivery id", e.delivery_id], ["Received", e.received_at], ["Body bytes", e.body_bytes]]) {
      dl.append(el("dt", { text: k }), el("dd", { text: String(v) }));
    }
    out.push(dl);
    out.push(table("event-headers", "Headers — " + e.headers_from + "; secrets shown as [redacted]", ["Name", "Value"],
      e.headers.map(([n, v]) => row([n, v], { "data-header": n }))));
    out.push(el("h2", { text: "Body" + (e.body_encoding ? " (" + e.body_encoding + ")" : "") }));
    out.push(el("pre", { id: "event-body", tabindex: "0", text: e.body == null ? "(" + e.body_unavailable + ")" : e.body }));
    if (e.sinks && e.sinks.length) {
      const sel = el("select", { id: "resend-sink" });
      for (const s of e.sinks) sel.append(el("option", { value: s, text: s }));
      const result = el("p", { id: "resend-result", role: "status" });
      const btn = el("button", { id: "resend", type: "button", text: "Send to sink again", onclick: async () => {
        result.textContent = "Sending…";
        try {
          const r = await api("events/" + encodeURIComponent(e.id) + "/resend", { method: "POST", body: { sink: sel.value } });
          result.textContent = r.results.map(x => x.sink + ": " + (x.delivered ? "delivered" : "failed — " + x.error)).join("; ");
        } catch (err) { result.textContent = "Failed: " + err.message; }
      } });
      out.push(el("h2", { text: "Send again" }), el("label", { for: "resend-sink", text: "Sink " }), sel, btn, result);
    }
    return out;
  }

  async function refused() {
    const data = await api("rejections?limit=200");
    const rows = data.rejections.map(r => row([r.at, r.source, r.client, String(r.status), r.reason, r.hint, r.delivery_id || ""],
      { "data-reason": r.reason, "data-source": r.source }));
    return [el("h1", { text: "Refused requests" }),
      table("refused-table", "Recent refused requests, newest first (" + data.kept + " of at most " + data.capacity + " kept)",
        ["Time", "Source", "Client", "Status", "Reason", "What to check", "Delivery id"], rows)];
  }

  // The latest replay started from this page, per kind ("dead-letters", "quarantine").
  const lastJob = {};

  async function replay(kind, body) {
    const p = document.getElementById("replay-progress");
    try {
      const j = await api(kind + "/replay", { method: "POST", body: body });
      lastJob[kind] = j.job;
      showJob(j);
    } catch (err) { if (p) { p.textContent = "Replay not started: " + err.message; p.dataset.state = "error"; } }
  }

  function showJob(j) {
    const p = document.getElementById("replay-progress");
    if (!p) return;
    p.dataset.state = j.state;
    const done = j.kind === "quarantine" ? " sent to Kafka" : " delivered";
    let t = "Replay #" + j.job + ": " + j.state + " — " + j.replayed + " of " + j.total + done;
    if (j.failed) t += ", " + j.failed + " failed";
    if (j.failure) t += " (" + (j.failure.sink || j.failure.id) + ": " + j.failure.error + ")";
    if (j.error) t += " (" + j.error + ")";
    if (j.remaining != null) t += "; " + j.remaining + " still pending";
    p.textContent = t;
  }

  async function deadLetters() {
    const data = await api("dead-letters");
    const rows = data.dead_letters.map(d => {
      const cb = el("input", { type: "checkbox", "aria-label": "Select " + d.entry, onchange: ev => { if (ev.target.checked) selected.add(d.entry); else selected.delete(d.entry); } });
      cb.checked = selected.has(d.entry);
      return row([cb, d.at, d.sink, d.source, d.event_type, d.delivery_id, d.error,
        el("button", { type: "button", class: "replay-one", text: "Replay", onclick: () => replay("dead-letters", { entries: [d.entry] }) })], { "data-entry": d.entry, "data-id": d.id });
    });
    const present = new Set(data.dead_letters.map(d => d.entry));
    for (const s of [...selected]) if (!present.has(s)) selected.delete(s);
    const progress = el("p", { id: "replay-progress", role: "status", "data-state": "idle", text: "No replay started from this page." });
    const out = [el("h1", { text: "Dead letters" }),
      el("div", { class: "actions" },
        el("button", { id: "replay-selected", type: "button", text: "Replay selected", onclick: () => { if (selected.size) replay("dead-letters", { entries: [...selected] }); } }),
        el("button", { id: "replay-all", type: "button", text: "Replay all", onclick: () => replay("dead-letters", { all: true }) })),
      progress,
      table("dlq-table", data.note || "Pending dead letters (delivery failed for good), oldest first",
        ["Select", "Dead-lettered", "Sink", "Source", "Event type", "Delivery id", "Last error", "Replay"], rows)];
    if (lastJob["dead-letters"] != null) {
      try { const j = await api("dead-letters/replay"); setTimeout(() => showJob(j), 0); } catch (_) { /* none yet */ }
    }
    return out;
  }

  async function quarantinePage() {
    const data = await api("quarantine");
    const rows = data.quarantine.map(q => {
      const cb = el("input", { type: "checkbox", "aria-label": "Select " + q.id, onchange: ev => { if (ev.target.checked) selectedQ.add(q.id); else selectedQ.delete(q.id); } });
      cb.checked = selectedQ.has(q.id);
      return row([cb, q.at, q.source, q.event, q.delivery_id, q.topic, q.reason, q.error,
        el("button", { type: "button", class: "replay-one", text: "Replay", onclick: () => replay("quarantine", { entries: [q.id] }) })], { "data-id": q.id, "data-source": q.source });
    });
    const present = new Set(data.quarantine.map(q => q.id));
    for (const s of [...selectedQ]) if (!present.has(s)) selectedQ.delete(s);
    const progress = el("p", { id: "replay-progress", role: "status", "data-state": "idle", text: "No replay started from this page." });
    const out = [el("h1", { text: "Quarantine" }),
      el("p", { text: "Events Kafka refused for good (too large, topic missing, not authorized). They were acknowledged and are kept on disk; a replay sends them to Kafka again with their hookgate-id." }),
      el("div", { class: "actions" },
        el("button", { id: "replay-selected", type: "button", text: "Replay selected", onclick: () => { if (selectedQ.size) replay("quarantine", { entries: [...selectedQ] }); } }),
        el("button", { id: "replay-all", type: "button", text: "Replay all", onclick: () => replay("quarantine", { all: true }) })),
      progress,
      table("quarantine-table", data.note || ("Quarantined events, oldest first" + (data.unreadable ? " (" + data.unreadable + " unreadable files)" : "")),
        ["Select", "Quarantined", "Source", "Event type", "Delivery id", "Topic", "Reason", "Error", "Replay"], rows)];
    if (lastJob["quarantine"] != null) {
      try { const j = await api("quarantine/replay"); setTimeout(() => showJob(j), 0); } catch (_) { /* none yet */ }
    }
    return out;
  }

  async function render() {
    clearTimeout(timer);
    const hash = window.location.hash.replace(/^#/, "") || "overview";
    const [page, arg] = hash.split("/");
    for (const a of document.querySelectorAll("nav a")) {
      if (a.getAttribute("href") === "#" + page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    let nodes;
    try {
      if (page === "events" && arg) nodes = await eventDetail(decodeURIComponent(arg));
      else if (page === "events") nodes = await events();
      else if (page === "refused") nodes = await refused();
      else if (page === "dead-letters") nodes = await deadLetters();
      else if (page === "quarantine") nodes = await quarantinePage();
      else nodes = await overview();
    } catch (err) {
      nodes = [el("p", { class: "bad", role: "alert", text: "Could not load: " + err.message })];
    }
    // Keep focus and typed text when the same view is redrawn.
    const active = document.activeElement && document.activeElement.id;
    view.replaceChildren(...nodes);
    view.dataset.page = page;
    if (active) { const a = document.getElementById(active); if (a) a.focus(); }
    document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString();
    if (page === "overview") openStream(); else closeStream();
    // The open stream redraws the Overview on each stats event; otherwise poll.
    if (!(page === "events" && arg) && !(page === "overview" && stream)) timer = setTimeout(render, POLL_MS);
  }

  window.addEventListener("hashchange", () => { render(); view.focus(); });
  render();
})();
