// redis-streaming demo page: renders the server's /events feed and posts the page's actions.
// Every value from the stream is written with textContent (never innerHTML), so a payload of
// "<script>" shows up as text and runs nothing.
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

function say(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.classList.toggle("error", Boolean(isError));
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

async function post(path, body) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
  } catch (err) {
    say(`${path}: the demo server did not answer (${err})`, true);
    return null;
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = { error: `HTTP ${response.status}` };
  }
  if (!response.ok) {
    say(`${path}: ${data.error || "HTTP " + response.status}`, true);
    return null;
  }
  return data;
}

// ------------------------------------------------------------------ rendering

// A group's lag: "≥ N" when the server's figure was unusable and counting stopped at its cap.
function lagText(g) {
  if (g.lag === null || g.lag === undefined) return "n/a";
  return g.lag_exact === false ? `\u2265 ${g.lag}` : String(g.lag);
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderStream(state) {
  const s = state.stream;
  setText("stream-key", s.key);
  setText("redis-url", state.redis ? state.redis.url : "");
  setText("claim-idle", state.config ? state.config.claim_idle_ms : "");
  setText("process-ms", state.config ? state.config.process_ms : "");
  setText("stat-length", s.length);
  setText("stat-first", s.first_entry_id);
  setText("stat-last", s.last_entry_id);
  setText("stat-produced", state.stats.produced_total);
  setText("stat-acked", state.stats.acked_total);
  setText("stat-claimed", state.stats.claimed_total);
  replaceRows(
    $("tail-body"),
    state.tail.map((e) =>
      el("tr", {}, el("td", {}, e.id), el("td", {}, e.type), el("td", {}, e.fields.order_id),
        el("td", {}, e.fields.customer), el("td", {}, e.fields.amount))
    )
  );
}

// Consumer cards are kept and updated in place, so a button is never swapped out under a click.
const cards = new Map();

function consumerCard(group, name) {
  const key = `${group}/${name}`;
  const pauseBtn = el("button", { type: "button", class: "light", "data-action": "pause" }, "Pause");
  const crashBtn = el("button", { type: "button", class: "light", "data-action": "crash" }, "Crash next 3");
  const removeBtn = el("button", { type: "button", class: "light", "data-action": "remove" }, "Remove");
  pauseBtn.addEventListener("click", () => {
    const paused = pauseBtn.dataset.action === "resume";
    post(paused ? "/resume" : "/pause", { group, name }).then((r) => {
      if (r) say(`${key} ${r.paused ? "paused" : "resumed"}`);
    });
  });
  crashBtn.addEventListener("click", () => {
    post("/crash", { group, name, count: 3 }).then((r) => {
      if (r) say(`${key} will drop its next ${r.crash_queued} deliveries`);
    });
  });
  removeBtn.addEventListener("click", () => {
    removeBtn.disabled = true;
    post("/remove-worker", { group, name }).then((r) => {
      removeBtn.disabled = false;
      if (r) {
        say(`removed ${key}; handed ${r.handed_over_count} pending entries to ` +
          `${r.handed_over_to || "nobody"}`);
      }
    });
  });
  const parts = {
    root: el("div", { class: "consumer", "data-consumer": key }),
    badges: el("span"),
    counters: el("div", { class: "counters" }),
    recent: el("ul", { class: "recent" }),
    pauseBtn,
  };
  parts.root.append(
    el("div", { class: "consumer-head" }, el("strong", {}, name), parts.badges),
    parts.counters,
    el("div", { class: "actions" }, pauseBtn, crashBtn, removeBtn),
    parts.recent
  );
  return parts;
}

function counter(label, value, field) {
  return el("span", {}, `${label} `, el("b", { "data-field": field }, value ?? "–"));
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
    counter("idle", c.idle_ms === null ? "–" : `${c.idle_ms} ms`, "idle"),
    counter("dropped", c.crashed_drops, "dropped")
  );
  parts.pauseBtn.dataset.action = c.paused ? "resume" : "pause";
  parts.pauseBtn.textContent = c.paused ? "Resume" : "Pause";
  parts.recent.replaceChildren(
    ...c.recent.map((d) =>
      el("li", {}, el("span", {}, d.id), el("span", {}, d.type),
        el("span", { class: d.outcome }, d.reaped ? `${d.outcome} (reaped)` : d.outcome))
    )
  );
}

function renderGroups(state) {
  const box = $("groups");
  const seen = new Set();
  const sections = [];
  for (const g of state.groups) {
    let section = box.querySelector(`[data-group="${CSS.escape(g.name)}"]`);
    if (!section) {
      section = el("div", { class: "group", "data-group": g.name },
        el("div", { class: "group-head" }), el("div", { class: "consumers" }));
    }
    section.firstChild.replaceChildren(
      el("strong", {}, g.name),
      el("span", {}, "last delivered ", el("code", {}, g.last_delivered_id)),
      el("span", {}, "pending ", el("b", { "data-field": "group-pending" }, g.pending)),
      el("span", {}, "lag ", el("b", { "data-field": "group-lag" }, lagText(g)))
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

function renderPending(state) {
  replaceRows(
    $("pending-body"),
    state.pending.map((p) =>
      el("tr", { "data-id": p.id, "data-group": p.group },
        el("td", {}, p.group), el("td", {}, p.id), el("td", {}, p.consumer),
        el("td", { "data-field": "idle" }, p.idle_ms), el("td", {}, p.deliveries))
    )
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
  }
}

function renderDlq(state) {
  const dlq = state.dlq || { length: 0, entries: [] };
  setText("dlq-count", `(${dlq.length})`);
  replaceRows(
    $("dlq-body"),
    dlq.entries.map((e) =>
      el("tr", {}, el("td", {}, e.id), el("td", {}, e.fields["dlq.original_id"]),
        el("td", {}, e.fields["dlq.group"]), el("td", {}, e.fields["dlq.deliveries"]),
        el("td", {}, e.fields["dlq.reason"]))
    )
  );
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
        el("td", {}, h.oldest_pending_idle_ms === null ? "–" : `${h.oldest_pending_idle_ms} ms`))
    )
  );
  $("health-reasons").replaceChildren(
    ...health.groups.flatMap((h) => h.reasons.map((r) => el("li", {}, `${h.name}: ${r}`)))
  );
}

function render(state) {
  renderStream(state);
  renderGroups(state);
  renderPending(state);
  renderDlq(state);
  renderHealth(state);
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
    const count = Number($("produce-count").value);
    post("/produce", { count, type: $("produce-type").value }).then((r) => {
      if (r) say(`produced ${r.produced} events (${r.first_id} … ${r.last_id})`);
    });
  });
  $("add-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const group = $("add-group").value.trim();
    const name = $("add-name").value.trim();
    post("/add-worker", { group, name }).then((r) => {
      if (r) say(`added ${group}/${name}${r.created_group ? " (new group)" : ""}`);
    });
  });
  $("claim-btn").addEventListener("click", () => {
    const target = $("claim-target").value;
    if (!target) return say("pick a target consumer first", true);
    const cut = target.indexOf("/");
    const group = target.slice(0, cut);
    const consumer = target.slice(cut + 1);
    post("/autoclaim", { group, consumer }).then((r) => {
      if (!r) return;
      const deleted = r.deleted.length ? r.deleted.join(", ") : "none";
      $("claim-result").textContent =
        `claimed ${r.claimed}, processed ${r.processed}, dropped ${r.dropped}, ` +
        `deleted IDs: ${deleted} (min idle ${r.min_idle_ms} ms)`;
    });
  });
  $("replay-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams({
      start: $("replay-start").value, end: $("replay-end").value, count: $("replay-count").value,
    });
    fetch(`/replay?${query}`).then(async (response) => {
      const data = await response.json();
      if (!response.ok) return say(`/replay: ${data.error}`, true);
      replaceRows(
        $("replay-body"),
        data.entries.map((e) =>
          el("tr", {}, el("td", {}, e.id),
            el("td", {}, Object.entries(e.fields).map(([k, v]) => `${k}=${v}`).join("  ")))
        )
      );
      say(`replayed ${data.entries.length} entries`);
    }, (err) => say(`/replay: ${err}`, true));
  });
  $("trim-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { approximate: $("trim-approx").checked };
    body[$("trim-by").value] = $("trim-value").value.trim();
    post("/trim", body).then((r) => {
      if (r) $("trim-result").textContent =
        `${r.strategy}: deleted ${r.deleted}, length now ${r.length}`;
    });
  });
  $("reset-btn").addEventListener("click", () => {
    post("/reset", {}).then((r) => {
      if (r) {
        $("claim-result").textContent = "";
        $("replay-body").replaceChildren();
        $("trim-result").textContent = "";
        say(`reset: ${r.consumers} consumer(s) across ${r.groups} group(s)`);
      }
    });
  });
}

wire();
connect();
