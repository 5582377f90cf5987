// redis-streaming demo page: renders the server's /events feed and posts the page's actions.
// Every value from the stream is written with textContent (never innerHTML), so a payload of
// "<script>" shows up as text and runs nothing. The charts are SVG drawn by pygal on the
// server (GET /charts/*.svg) and shown as images.
"use strict";

const $ = (id) => document.getElementById(id);

// A DOM element with text children only; attributes are set through the DOM, not markup.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? ""));
  }
  return node;
}

function setText(id, value) {
  const node = $(id);
  const text = value === null || value === undefined ? "–" : String(value);
  if (node.textContent !== text) node.textContent = text;
}

// Seconds, for idle times and thresholds: "0.3 s", "12.4 s", "245 s".
function secs(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = ms / 1000;
  return `${s < 100 ? s.toFixed(1) : Math.round(s)} s`;
}

const pad = (n, w) => String(n).padStart(w || 2, "0");

// The wall-clock time in a stream ID (its first part is Unix milliseconds), in local time.
function idTime(id) {
  const ms = Number(String(id).split("-")[0]);
  if (!Number.isFinite(ms) || ms <= 0) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

// A stream ID that never wraps, with its wall-clock time on hover.
function idEl(id) {
  if (id === null || id === undefined || id === "") return el("span", { class: "id" }, "–");
  const when = idTime(id);
  return el("span", when ? { class: "id", title: `added ${when} (local time)` } : { class: "id" }, id);
}

function setId(nodeId, id) {
  const node = $(nodeId);
  const text = id === null || id === undefined ? "–" : String(id);
  if (node.textContent === text) return;
  node.textContent = text;
  const when = id ? idTime(id) : "";
  if (when) node.title = `added ${when} (local time)`;
  else node.removeAttribute("title");
}

// An action's answer (text, or text and ID elements), next to the control that asked for it;
// `kind` is "ok" (the default), "warn" (done, but it did nothing) or true/"error".
function report(node, text, kind) {
  if (Array.isArray(text)) node.replaceChildren(...text);
  else node.textContent = text;
  const k = kind === true ? "error" : kind || "ok";
  for (const name of ["ok", "warn", "error"]) node.classList.toggle(name, name === k);
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

// POST a JSON body; an error is reported on `out` (the result line of the panel that asked)
// and answers null.
async function post(path, body, out) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
  } catch (err) {
    report(out, `${path}: the demo server did not answer (${err})`, true);
    return null;
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = { error: `HTTP ${response.status}` };
  }
  if (!response.ok) {
    report(out, `${path}: ${data.error || data.message || "HTTP " + response.status}`, true);
    return null;
  }
  return data;
}

// ------------------------------------------------------------------ rendering

let lastState = null;

// A group's lag: "≥ N" when the server's figure was unusable and counting stopped at its cap.
function lagText(g) {
  if (g.lag === null || g.lag === undefined) return "n/a";
  return g.lag_exact === false ? `\u2265 ${g.lag}` : String(g.lag);
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function claimIdleMs(state) {
  return state && state.config ? state.config.claim_idle_ms : null;
}

function renderStream(state) {
  const s = state.stream;
  setText("stream-key", s.key);
  setText("redis-url", state.redis ? state.redis.url : "");
  setText("claim-idle", secs(claimIdleMs(state)));
  setText("process-ms", state.config ? state.config.process_ms : "");
  setText("stat-length", s.length);
  setId("stat-first", s.first_entry_id);
  setId("stat-last", s.last_entry_id);
  setText("stat-produced", state.stats.produced_total);
  setText("stat-acked", state.stats.acked_total);
  setText("stat-claimed", state.stats.claimed_total);
  replaceRows(
    $("tail-body"),
    state.tail.map((e) =>
      el("tr", {}, el("td", {}, idEl(e.id)), el("td", {}, e.type), el("td", {}, e.fields.order_id),
        el("td", {}, e.fields.customer), el("td", {}, e.fields.amount))
    )
  );
}

// Consumer cards are kept and updated in place, so a button is never swapped out under a click.
const cards = new Map();

function groupResult(group) {
  const section = $("groups").querySelector(`[data-group="${CSS.escape(group)}"]`);
  return section ? section.querySelector(".group-result") : $("reset-result");
}

function consumerCard(group, name) {
  const key = `${group}/${name}`;
  const pauseBtn = el("button", { type: "button", class: "light", "data-action": "pause" }, "Pause");
  const crashBtn = el("button", { type: "button", class: "light", "data-action": "crash" }, "Crash next 3");
  const removeBtn = el("button", { type: "button", class: "light", "data-action": "remove" }, "Remove");
  const result = el("p", { class: "result card-result", role: "status", "aria-live": "polite" });
  pauseBtn.addEventListener("click", () => {
    const paused = pauseBtn.dataset.action === "resume";
    post(paused ? "/resume" : "/pause", { group, name }, result).then((r) => {
      if (r) report(result, r.paused ? "paused: fetches nothing until resumed" : "resumed");
    });
  });
  crashBtn.addEventListener("click", () => {
    post("/crash", { group, name, count: 3 }, result).then((r) => {
      if (r) report(result, `crash asked: drops its next ${r.crash_queued} deliveries unacked`);
    });
  });
  removeBtn.addEventListener("click", () => {
    removeBtn.disabled = true;
    const out = groupResult(group);
    post("/remove-worker", { group, name }, result).then((r) => {
      removeBtn.disabled = false;
      if (r) {
        report(out, `removed ${name}; handed ${r.handed_over_count} pending entries to ` +
          `${r.handed_over_to || "nobody"}`);
      }
    });
  });
  const parts = {
    root: el("div", { class: "consumer", "data-consumer": key }),
    badges: el("span"),
    counters: el("div", { class: "counters" }),
    recent: el("ul", { class: "recent" }),
    result,
    pauseBtn,
  };
  parts.root.append(
    el("div", { class: "consumer-head" }, el("strong", {}, name), parts.badges),
    parts.counters,
    el("div", { class: "actions" }, pauseBtn, crashBtn, removeBtn),
    result,
    parts.recent
  );
  return parts;
}

const COUNTER_HELP = {
  processed: "Entries from its own reads that it handled and acked.",
  reaped: "Entries it took over with XAUTOCLAIM (from a crashed or slow peer), handled and acked.",
  pending: "Delivered to it and not acked yet (its share of the group's PEL).",
  idle: "Seconds since it last read from the stream (XINFO CONSUMERS).",
  dropped: "Deliveries the crash lever dropped without an ack; they stay pending until claimed.",
};

function counter(label, value, field) {
  return el("span", { title: COUNTER_HELP[field] || "" }, `${label} `,
    el("b", { "data-field": field }, value ?? "–"));
}

function deliveryItem(d) {
  const outcome = d.reaped ? `${d.outcome} (reaped)` : d.outcome;
  const attrs = { class: d.kept ? "kept" : "" };
  if (d.note && d.note !== d.outcome) attrs.title = d.note;
  return el("li", attrs, idEl(d.id), el("span", {}, d.type),
    el("span", { class: `outcome ${d.outcome}` }, outcome));
}

function updateCard(parts, c) {
  const badges = [];
  if (c.paused) badges.push(el("span", { class: "badge paused" }, "paused"));
  if (c.will_drop) badges.push(el("span", { class: "badge drop" }, `will drop ${c.crash_queued}`));
  if (!c.alive) badges.push(el("span", { class: "badge dead" }, c.managed ? "stopped" : "not managed"));
  parts.badges.replaceChildren(...badges);
  parts.counters.replaceChildren(
    counter("processed", c.processed, "processed"),
    counter("reaped", c.reaped, "reaped"),
    counter("pending", c.pending, "pending"),
    counter("idle", secs(c.idle_ms), "idle"),
    counter("dropped", c.crashed_drops, "dropped")
  );
  parts.pauseBtn.dataset.action = c.paused ? "resume" : "pause";
  parts.pauseBtn.textContent = c.paused ? "Resume" : "Pause";
  const items = [];
  let marked = false;
  for (const d of c.recent) {
    if (d.kept && !marked) {
      marked = true;
      items.push(el("li", { class: "kept-head" }, "earlier, not acked:"));
    }
    items.push(deliveryItem(d));
  }
  parts.recent.replaceChildren(...items);
}

function renderGroups(state) {
  const box = $("groups");
  const seen = new Set();
  const sections = [];
  for (const g of state.groups) {
    let section = box.querySelector(`[data-group="${CSS.escape(g.name)}"]`);
    if (!section) {
      section = el("div", { class: "group", "data-group": g.name },
        el("div", { class: "group-head" }),
        el("p", { class: "result group-result", role: "status", "aria-live": "polite" }),
        el("div", { class: "consumers" }));
    }
    section.firstChild.replaceChildren(
      el("strong", {}, g.name),
      el("span", { title: "The last entry handed to a consumer of this group." },
        "last delivered ", idEl(g.last_delivered_id)),
      el("span", { title: "Delivered to a consumer of this group, not acked yet." },
        "pending ", el("b", { "data-field": "group-pending" }, g.pending)),
      el("span", { title: "Entries in the stream not yet delivered to this group." },
        "lag ", el("b", { "data-field": "group-lag" }, lagText(g)))
    );
    const list = section.lastChild;
    const order = [];
    for (const c of g.consumers_detail) {
      const key = `${g.name}/${c.name}`;
      seen.add(key);
      let parts = cards.get(key);
      if (!parts) {
        parts = consumerCard(g.name, c.name);
        cards.set(key, parts);
      }
      updateCard(parts, c);
      order.push(parts.root);
    }
    order.forEach((node, i) => {
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
    });
    while (list.children.length > order.length) list.lastChild.remove();
    sections.push(section);
  }
  for (const key of [...cards.keys()]) if (!seen.has(key)) cards.delete(key);
  sections.forEach((node, i) => {
    if (box.children[i] !== node) box.insertBefore(node, box.children[i] || null);
  });
  while (box.children.length > sections.length) box.lastChild.remove();

  const names = state.groups.map((g) => g.name);
  const datalist = $("group-names");
  if (datalist.dataset.names !== names.join("\n")) {
    datalist.dataset.names = names.join("\n");
    datalist.replaceChildren(...names.map((n) => el("option", { value: n })));
  }
}

// ------------------------------------------------------------------ pending and XAUTOCLAIM

// Per group: how many entries are pending, how many of the listed ones are claimable now, and
// how long until the next one is.
function claimView(state) {
  const threshold = claimIdleMs(state) ?? 0;
  const view = new Map(state.groups.map((g) => [g.name, {
    pending: g.pending, claimable: 0, nextInMs: null, oldestIdleMs: null,
  }]));
  for (const p of state.pending) {
    const v = view.get(p.group);
    if (!v) continue;
    v.oldestIdleMs = Math.max(v.oldestIdleMs ?? 0, p.idle_ms);
    if (p.idle_ms >= threshold) v.claimable += 1;
    else v.nextInMs = Math.min(v.nextInMs ?? Infinity, threshold - p.idle_ms);
  }
  return view;
}

// The consumer "XAUTOCLAIM to selected" should target: one of the group with the most
// claimable (then pending) entries, preferring a running one that holds none of them.
function bestTarget(state, view) {
  const groups = state.groups
    .filter((g) => (view.get(g.name) || {}).pending > 0)
    .sort((a, b) => (view.get(b.name).claimable - view.get(a.name).claimable) ||
      (b.pending - a.pending));
  for (const g of groups) {
    const able = g.consumers_detail.filter((c) => c.managed && c.alive);
    const pick = able.find((c) => !c.paused && c.pending === 0) ||
      able.find((c) => !c.paused) || able[0];
    if (pick) return `${g.name}/${pick.name}`;
  }
  return null;
}

let claimPickedByHand = false;

function splitTarget(target) {
  const cut = target.indexOf("/");
  return [target.slice(0, cut), target.slice(cut + 1)];
}

function renderPending(state) {
  const threshold = claimIdleMs(state) ?? 0;
  setText("claim-threshold", secs(threshold));
  replaceRows(
    $("pending-body"),
    state.pending.map((p) => {
      const ready = p.idle_ms >= threshold;
      return el("tr", { "data-id": p.id, "data-group": p.group, class: ready ? "claimable" : "" },
        el("td", {}, p.group), el("td", {}, idEl(p.id)), el("td", {}, p.consumer),
        el("td", { "data-field": "idle", "data-ms": String(p.idle_ms) }, secs(p.idle_ms)),
        el("td", {}, p.deliveries),
        el("td", { "data-field": "claimable" },
          ready ? "now" : `in ${secs(threshold - p.idle_ms)}`));
    })
  );
  $("pending-empty").hidden = state.pending.length > 0;

  // Rebuild the target list only when the set of consumers changes, keeping the selection.
  const select = $("claim-target");
  const options = state.groups.flatMap((g) =>
    g.consumers_detail.filter((c) => c.managed).map((c) => `${g.name}/${c.name}`));
  if (select.dataset.options !== options.join("\n")) {
    const previous = select.value;
    select.dataset.options = options.join("\n");
    select.replaceChildren(...options.map((o) => el("option", { value: o }, o)));
    if (options.includes(previous)) select.value = previous;
    else claimPickedByHand = false;
  }
  const view = claimView(state);
  // The server suggests a target (claim_target) where it does; else the page works it out.
  const suggested = state.claim_target;
  const best = suggested === undefined ? bestTarget(state, view)
    : suggested && `${suggested.group}/${suggested.consumer}`;
  if (!claimPickedByHand && best && select.value !== best) select.value = best;

  // Say when the selected target's group has nothing to claim while another group has.
  let hint = "";
  if (select.value) {
    const [group] = splitTarget(select.value);
    const mine = view.get(group);
    const other = [...view.entries()].find(([name, v]) => name !== group && v.pending > 0);
    if (mine && mine.pending === 0 && other) {
      hint = `${group} has nothing pending; ${other[0]} has ${other[1].pending} ` +
        `(${other[1].claimable} claimable now): pick one of its consumers.`;
    }
  }
  setText("claim-hint", hint);
}

// Why an XAUTOCLAIM took nothing: the server's own reason when it gives one, else what the
// last live snapshot shows.
function nothingClaimedWhy(group, r) {
  if (r.reason) return r.reason;
  const state = lastState;
  const g = state && state.groups.find((x) => x.name === group);
  if (!g || g.pending === 0) {
    return `no pending entries in ${group}: every entry delivered to it was acked`;
  }
  const v = claimView(state).get(group);
  const wait = r.min_idle_ms - (v.oldestIdleMs ?? 0);
  if (wait > 0) {
    return `${g.pending} pending in ${group}, but none idle for ${secs(r.min_idle_ms)} yet ` +
      `(longest idle ${secs(v.oldestIdleMs)}): the first becomes claimable in about ${secs(wait)}`;
  }
  return `the ${g.pending} pending entries of ${group} were acked or claimed just before`;
}

// ------------------------------------------------------------------ dead letters, health

function renderDlq(state) {
  const dlq = state.dlq || { length: 0, entries: [] };
  setText("dlq-count", `(${dlq.length})`);
  const max = state.config ? state.config.max_deliveries : null;
  setText("max-deliveries", max === null || max === undefined ? "(off)" : max);
  replaceRows(
    $("dlq-body"),
    dlq.entries.map((e) =>
      el("tr", {}, el("td", {}, idEl(e.id)), el("td", {}, idEl(e.fields["dlq.original_id"])),
        el("td", {}, e.fields["dlq.group"]), el("td", {}, e.fields["dlq.deliveries"]),
        el("td", {}, e.fields["dlq.reason"]))
    )
  );
}

function thresholdsText(t) {
  if (!t) return "";
  const trend = t.growth_samples ? `, or lag grew on ${t.growth_samples} checks in a row` : "";
  return `Thresholds: lagging when lag > ${t.max_lag}${trend}; stuck when pending > ` +
    `${t.max_pending} or the oldest pending entry is idle over ${secs(t.max_pending_idle_ms)} ` +
    `(twice the claim idle of ${secs(t.claim_idle_ms)}, at least 1 s). ` +
    "redis-streaming inspect uses the same rule.";
}

function renderHealth(state) {
  const health = state.health || { ok: true, groups: [] };
  setText("health-overall", health.ok ? "(all ok)" : "(attention)");
  replaceRows(
    $("health-body"),
    health.groups.map((h) =>
      el("tr", { "data-group": h.name }, el("td", {}, h.name),
        el("td", {}, el("span", { class: `status ${h.status.replace("+", "-")}` }, h.status)),
        el("td", { "data-field": "lag" }, lagText(h)), el("td", {}, h.pending),
        el("td", {}, secs(h.oldest_pending_idle_ms)))
    )
  );
  $("health-reasons").replaceChildren(
    ...health.groups.flatMap((h) => h.reasons.map((r) => el("li", {}, `${h.name}: ${r}`)))
  );
  setText("health-thresholds", thresholdsText(health.thresholds));
}

// ------------------------------------------------------------------ charts

// The charts are redrawn from the samples the live feed takes; each state event reloads them
// (at most every 2 s). The new image replaces the old one only once it has loaded, so the
// chart never blinks.
const CHART_EVERY_MS = 2000;
let chartLoadedAt = 0;
let chartSeq = 0;

function refreshCharts(force) {
  const now = Date.now();
  if (!force && now - chartLoadedAt < CHART_EVERY_MS) return;
  chartLoadedAt = now;
  chartSeq += 1;
  for (const name of ["rates", "backlog"]) {
    const current = $(`chart-${name}`);
    const next = current.cloneNode(false);
    next.dataset.seq = String(chartSeq);
    next.addEventListener("load", () => {
      const shown = $(`chart-${name}`); // an older load may land after a newer one: keep newest
      if (Number(shown.dataset.seq || 0) < Number(next.dataset.seq)) shown.replaceWith(next);
    }, { once: true });
    next.src = `/charts/${name}.svg?seq=${chartSeq}`;
  }
}

function renderCharts(state) {
  if (state.charts && state.charts.window_s) {
    setText("chart-window", Math.round(state.charts.window_s / 60));
  }
  refreshCharts(false);
}

function render(state) {
  lastState = state;
  renderStream(state);
  renderGroups(state);
  renderPending(state);
  renderDlq(state);
  renderHealth(state);
  renderCharts(state);
  document.body.dataset.ready = "1";
}

// ------------------------------------------------------------------ live feed

function connect() {
  const live = $("live");
  const feed = new EventSource("/events");
  feed.addEventListener("state", (event) => {
    hideBanner();
    live.textContent = "live";
    live.classList.remove("off");
    render(JSON.parse(event.data));
  });
  feed.addEventListener("unavailable", (event) => {
    const info = JSON.parse(event.data);
    showBanner(`Redis unreachable. The numbers below are stale. (${info.error})`);
    live.textContent = "Redis down";
    live.classList.add("off");
  });
  feed.onerror = () => {
    live.textContent = "reconnecting…";
    live.classList.add("off");
    showBanner("Lost the connection to the demo server; reconnecting…");
  };
}

// ------------------------------------------------------------------ actions

function wire() {
  $("produce-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const out = $("produce-result");
    const count = Number($("produce-count").value);
    post("/produce", { count, type: $("produce-type").value }, out).then((r) => {
      if (!r) return;
      report(out, [`produced ${r.produced} events (`, idEl(r.first_id), " … ",
        idEl(r.last_id), ")"]);
    });
  });
  $("add-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const out = $("add-result");
    const group = $("add-group").value.trim();
    const name = $("add-name").value.trim();
    post("/add-worker", { group, name }, out).then((r) => {
      if (r) report(out, `added ${group}/${name}${r.created_group ? " (new group)" : ""}`);
    });
  });
  $("claim-target").addEventListener("change", () => {
    claimPickedByHand = true;
    if (lastState) renderPending(lastState);
  });
  $("claim-btn").addEventListener("click", () => {
    const out = $("claim-result");
    const target = $("claim-target").value;
    if (!target) return report(out, "pick a target consumer first", true);
    const [group, consumer] = splitTarget(target);
    post("/autoclaim", { group, consumer }, out).then((r) => {
      if (!r) return;
      if (r.claimed === 0) {
        report(out, `claimed 0 into ${target}: ${nothingClaimedWhy(group, r)}`, "warn");
        return;
      }
      const deleted = r.deleted.length
        ? r.deleted.flatMap((id, i) => (i ? [", ", idEl(id)] : [idEl(id)])) : ["none"];
      const more = [];
      if (r.dropped) more.push(`dropped ${r.dropped}`);
      if (r.failed) more.push(`failed ${r.failed}`);
      if (r.dead_lettered) more.push(`dead-lettered ${r.dead_lettered}`);
      report(out, [`claimed ${r.claimed}, processed ${r.processed}` +
        (more.length ? `, ${more.join(", ")}` : "") +
        ` into ${target}; deleted IDs (trimmed before anyone handled them): `, ...deleted,
        ` (min idle ${secs(r.min_idle_ms)})`]);
    });
  });
  $("replay-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const out = $("replay-result");
    const body = $("replay-body");
    const query = new URLSearchParams({
      start: $("replay-start").value, end: $("replay-end").value, count: $("replay-count").value,
    });
    const failed = (text) => {
      body.replaceChildren(); // rows of an earlier replay would pass for this one's answer
      report(out, `/replay: ${text}`, true);
    };
    fetch(`/replay?${query}`).then(async (response) => {
      let data;
      try {
        data = await response.json();
      } catch (err) {
        return failed(`HTTP ${response.status}`);
      }
      if (!response.ok) return failed(data.error || `HTTP ${response.status}`);
      replaceRows(
        body,
        data.entries.map((e) =>
          el("tr", {}, el("td", {}, idEl(e.id)),
            el("td", {}, Object.entries(e.fields).map(([k, v]) => `${k}=${v}`).join("  ")))
        )
      );
      report(out, `replayed ${data.entries.length} entries (${data.start} … ${data.end})`);
    }, (err) => failed(`the demo server did not answer (${err})`));
  });
  $("trim-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const out = $("trim-result");
    const body = { approximate: $("trim-approx").checked };
    body[$("trim-by").value] = $("trim-value").value.trim();
    post("/trim", body, out).then((r) => {
      if (r) report(out, `${r.strategy}: deleted ${r.deleted}, length now ${r.length}`);
    });
  });
  $("reset-btn").addEventListener("click", () => {
    const out = $("reset-result");
    post("/reset", {}, out).then((r) => {
      if (!r) return;
      for (const id of ["claim-result", "produce-result", "add-result", "replay-result",
        "trim-result"]) report($(id), "");
      $("replay-body").replaceChildren();
      claimPickedByHand = false;
      report(out, `reset: ${r.consumers} consumer(s) across ${r.groups} group(s)`);
      refreshCharts(true);
    });
  });
}

wire();
connect();
