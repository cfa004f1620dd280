// Periscope's web console. A client of the server's API like the CLI: every read and change
// goes through /api/v1 with the signed-in token and `x-periscope-via: web` (so changes are
// audited as made from the web). No framework and no build step: the page is small, and the
// binary embeds these files as they are.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const main = $("#main");
const signInForm = $("#sign-in");

// ---- session and API ----------------------------------------------------------------------

const session = {
  token: sessionStorage.getItem("periscope.token"),
  name: null,
  role: null,
  canChange() {
    return this.role === "operator" || this.role === "admin";
  },
};

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.field = body && body.field;
  }
}

async function api(method, path, body) {
  const res = await fetch(`/api/v1${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${session.token}`,
      "x-periscope-via": "web",
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  // 404 with a probe: a removed probe, which the body still describes.
  if (!res.ok && !(res.status === 404 && json && json.probe)) {
    if (res.status === 401) signOut("Your token is no longer valid; sign in again.");
    throw new ApiError(res.status, json);
  }
  return json;
}

// Builds an element: el("td", {class: "x", "data-line": 3}, child, "text", …).
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function stateBadge(state) {
  return el("span", { class: `state state-${state}` }, state);
}

/// A control that changes things: disabled, with the reason on hover, for a viewer.
function guarded(button) {
  if (!session.canChange()) {
    button.disabled = true;
    button.title = `Your token's role is ${session.role}: viewing only (adding and removing probes needs operator)`;
  }
  return button;
}

// ---- sign in ------------------------------------------------------------------------------

async function signIn(token) {
  session.token = token;
  const me = await api("GET", "/whoami");
  session.name = me.name;
  session.role = me.role;
  sessionStorage.setItem("periscope.token", token);
  $("#who").textContent = `${me.name} (${me.role})`;
  $("#nav").hidden = false;
  $("#sign-out").hidden = false;
  $("#nav-audit").hidden = me.role !== "admin";
}

function signOut(message) {
  sessionStorage.removeItem("periscope.token");
  session.token = null;
  session.role = null;
  stopStream();
  $("#nav").hidden = true;
  $("#sign-out").hidden = true;
  $("#who").textContent = "";
  main.replaceChildren(signInForm);
  $("#token").value = "";
  $("#sign-in-error").textContent = message || "";
  if (location.hash) history.replaceState(null, "", "#");
}

signInForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("#token").value.trim();
  const err = $("#sign-in-error");
  if (!token) {
    err.textContent = "Enter a token.";
    return;
  }
  try {
    await signIn(token);
    err.textContent = "";
    // A new hash routes by itself (hashchange); the same one needs routing here.
    if (location.hash === "#/instances") route();
    else location.hash = "#/instances";
  } catch (e) {
    session.token = null;
    err.textContent =
      e.status === 401 || e.status === 403
        ? "That token is not valid (unknown or revoked)."
        : `Cannot sign in: ${e.message}`;
  }
});

$("#sign-out").addEventListener("click", () => signOut());

// ---- routing ------------------------------------------------------------------------------

const views = {
  instances: viewInstances,
  instance: viewInstance,
  probes: viewProbes,
  events: viewEvents,
  audit: viewAudit,
};

// Views load asynchronously; a view the user has already left must not replace the one they
// went to. Each route gets a number, and only the newest route's view may show anything.
let routeNumber = 0;

async function route() {
  if (!session.token) return signOut();
  const number = ++routeNumber;
  const show = (...nodes) => {
    if (number !== routeNumber) return false;
    main.replaceChildren(...nodes);
    return true;
  };
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const view = views[name] || viewInstances;
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === (name === "instance" ? "instances" : name));
  }
  stopStream();
  try {
    await view(show, ...rest.map(decodeURIComponent));
  } catch (e) {
    show(el("div", { class: "card" }, el("p", { class: "error" }, e.message)));
  }
}

window.addEventListener("hashchange", route);

// ---- instances ----------------------------------------------------------------------------

async function viewInstances(show) {
  const [{ instances }, { probes }] = await Promise.all([
    api("GET", "/instances"),
    api("GET", "/probes"),
  ]);
  // Probes attached per instance, from each live probe's per-instance states.
  const attached = new Map();
  const shown = await Promise.all(probes.slice(0, 50).map((p) => api("GET", `/probes/${encodeURIComponent(p.id)}`)));
  for (const { probe } of shown) {
    for (const i of probe.instances || []) {
      if (i.state === "installed" || i.state === "paused" || i.state === "pending") {
        attached.set(i.instance, (attached.get(i.instance) || 0) + 1);
      }
    }
  }
  const filter = el("input", { id: "tag-filter", placeholder: "service=ledger", "aria-label": "Filter by tag" });
  const body = el("tbody");
  const render = () => {
    const want = filter.value.trim();
    const rows = instances.filter((i) => {
      if (!want) return true;
      const tags = Object.entries(i.tags || {}).map(([k, v]) => `${k}=${v}`);
      return want.split(/[ ,]+/).every((w) => tags.some((t) => t.includes(w)) || i.id.includes(w));
    });
    body.replaceChildren(
      ...rows.map((i) =>
        el("tr", { "data-instance": i.id },
          el("td", {}, el("a", { href: `#/instance/${encodeURIComponent(i.id)}` }, i.id)),
          el("td", {}, i.host),
          el("td", { class: "mono" }, i.pid),
          el("td", { class: "mono" }, i.executable.split("/").pop()),
          el("td", {}, i.language || ""),
          el("td", {}, Object.entries(i.tags || {}).map(([k, v]) => el("span", { class: "tag" }, `${k}=${v}`))),
          el("td", {}, stateBadge(i.state)),
          el("td", { class: "mono" }, attached.get(i.id) || 0),
        ),
      ),
    );
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "No instance matches.")));
  };
  filter.addEventListener("input", render);
  render();
  show(
    el("h1", {}, "Instances"),
    el("div", { class: "toolbar" }, el("div", {}, el("label", { for: "tag-filter" }, "Filter by tag"), filter)),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["Instance", "Host", "PID", "Executable", "Language", "Tags", "State", "Probes"].map((h) => el("th", {}, h)))),
      body,
    ),
  );
}

// ---- an instance's code, and the probe form -------------------------------------------------

async function viewInstance(show, id) {
  const { instances } = await api("GET", "/instances");
  const inst = instances.find((i) => i.id === id);
  if (!inst) throw new Error(`No instance ${id}.`);
  const fileInput = el("input", { id: "file", placeholder: "main.rs", spellcheck: "false" });
  const fileError = el("p", { class: "error", role: "alert" });
  const source = el("div", { class: "source", id: "source" }, el("div", { class: "empty" }, "Open a source file of this binary to see its lines."));
  const panel = el("div", { class: "form-panel" });
  const open = async (ev) => {
    ev && ev.preventDefault();
    fileError.textContent = "";
    const file = fileInput.value.trim();
    if (!file) return;
    try {
      const listing = await api("GET", `/instances/${encodeURIComponent(id)}/source?file=${encodeURIComponent(file)}`);
      showSource(listing, inst, source, panel);
    } catch (e) {
      fileError.textContent = e.message;
    }
  };
  show(
    el("h1", {}, `${inst.executable.split("/").pop()} `, el("span", { class: "muted" }, `pid ${inst.pid} on ${inst.host} · ${inst.id}`)),
    el("form", { class: "toolbar", onsubmit: open },
      el("div", {}, el("label", { for: "file" }, "File"), fileInput),
      el("button", { type: "submit" }, "Open"),
    ),
    fileError,
    el("div", { class: "split" }, source, panel),
  );
  fileInput.focus();
}

function showSource(listing, inst, source, panel) {
  const lines = listing.lines.map((l) => {
    const attrs = { class: l.instrumentable ? "line code" : "line" };
    if (l.instrumentable) {
      attrs["data-line"] = l.line;
      attrs.tabindex = "0";
      attrs.role = "button";
      attrs["aria-label"] = `Probe line ${l.line}`;
    }
    const row = el("div", attrs, el("span", { class: "no" }, l.line), el("span", {}, l.text ?? ""));
    if (l.instrumentable) {
      const pick = () => {
        for (const s of source.querySelectorAll(".selected")) s.classList.remove("selected");
        row.classList.add("selected");
        probeForm(panel, inst, listing.file, l.line);
      };
      row.addEventListener("click", pick);
      row.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          pick();
        }
      });
    }
    return row;
  });
  source.replaceChildren(el("div", { class: "muted", style: "padding:6px 10px" }, listing.file), ...lines);
}

function probeForm(panel, inst, file, line) {
  const name = file.split("/").pop();
  const where = `${name}:${line}`;
  const field = (id, label, input, hint) => {
    const err = el("pre", { class: "error", id: `${id}-error`, hidden: true });
    return { box: el("div", {}, el("label", { for: id }, label), input, hint ? el("div", { class: "muted" }, hint) : null, err), err };
  };
  const kind = el("select", { id: "kind" }, ...["log", "snapshot", "count", "gauge", "verify"].map((k) => el("option", { value: k }, k)));
  const failure = el("input", { id: "failure", spellcheck: "false", placeholder: "refund > charge.amount" });
  const fixes = el("textarea", { id: "fixes", rows: "3", spellcheck: "false", placeholder: "capped: refund = min(refund, charge.amount)" });
  const keep = el("textarea", { id: "keep", rows: "2", spellcheck: "false", placeholder: "(default: what the fixes assign)" });
  const replay = el("input", { id: "replay", spellcheck: "false", placeholder: "(shadow mode) or FROM..UNTIL, e.g. refund..refunds.rs:25" });
  const template = el("input", { id: "template", spellcheck: "false", placeholder: "total={total} user={req.user}" });
  const condition = el("input", { id: "condition", spellcheck: "false", placeholder: "amount > 1000" });
  const by = el("input", { id: "by", spellcheck: "false", placeholder: "req.method" });
  const value = el("input", { id: "value", spellcheck: "false", placeholder: "queue.len()" });
  const ttl = el("input", { id: "ttl", type: "number", min: "1", value: "3600" });
  const maxHits = el("input", { id: "max-hits", type: "number", min: "1", placeholder: "none" });
  const rate = el("input", { id: "rate", type: "number", min: "0", step: "any", placeholder: "1000/s" });
  const budget = el("input", { id: "budget", type: "number", min: "1", max: "10000", placeholder: "100" });
  const targetSel = el("select", { id: "target-kind" }, el("option", { value: "instance" }, `this instance (${inst.id})`), el("option", { value: "tags" }, "instances with tags…"));
  const tags = el("input", { id: "target-tags", hidden: true, value: Object.entries(inst.tags || {}).filter(([k]) => k !== "host").map(([k, v]) => `${k}=${v}`).join(",") || `host=${inst.host}` });
  const fTemplate = field("template", "Template", template, "Expressions in braces are read at each hit.");
  const fCondition = field("condition", "Condition", condition);
  const fBy = field("by", "Group by", by);
  const fValue = field("value", "Value", value, "A number read at each hit: last, min, max and mean per interval.");
  const fFailure = field("failure", "Failure", failure, "The symptom, as a condition at this line.");
  const fFixes = field("fixes", "Fixes", fixes, "One candidate per line: NAME: VAR = EXPR[; VAR = EXPR]. Checked read-only on live hits.");
  const fKeep = field("keep", "Keep", keep, "Results that must not change where nothing failed, one per line.");
  const fReplay = field("replay", "Replay", replay, "Empty: shadow mode, evaluated side by side at this line. FROM..UNTIL: a copy of the process runs each fix from FROM; the outcome is read at UNTIL.");
  const general = el("pre", { class: "error", hidden: true });
  const status = el("p", { class: "muted" });
  const add = guarded(el("button", { type: "submit", id: "add-probe" }, "Add probe"));
  const spec = () => {
    const k = kind.value;
    const p = { kind: k, target: targetSel.value === "instance" ? inst.id : tags.value.trim(), location: where };
    if (k === "log") p.template = template.value;
    if (condition.value.trim()) p.condition = condition.value.trim();
    if ((k === "count" || k === "gauge") && by.value.trim()) p.by = by.value.trim();
    if (k === "gauge") p.value = value.value.trim();
    const lines = (t) => t.value.split("\n").map((x) => x.trim()).filter(Boolean);
    if (k === "verify") {
      p.failure = failure.value.trim();
      p.fixes = lines(fixes);
      if (lines(keep).length) p.keep = lines(keep);
      if (replay.value.trim()) p.replay = replay.value.trim();
    }
    if (ttl.value) p.ttl_seconds = Number(ttl.value);
    if (maxHits.value) p.max_hits = Number(maxHits.value);
    if (rate.value) p.rate_limit = Number(rate.value);
    if (budget.value) p.budget_ms = Number(budget.value);
    return p;
  };
  const errors = { template: fTemplate.err, condition: fCondition.err, by: fBy.err, value: fValue.err, failure: fFailure.err, fixes: fFixes.err, keep: fKeep.err, replay: fReplay.err };
  const showError = (e) => {
    for (const box of [...Object.values(errors), general]) box.hidden = true;
    if (!e) return;
    const box = errors[e.field] || general;
    box.textContent = e.message;
    box.hidden = false;
  };
  // Checked by the API against the binary (names in scope, fields, the location), as typed.
  let pending = 0;
  const check = async () => {
    const n = ++pending;
    try {
      const r = await api("POST", "/probes/check", spec());
      if (n !== pending) return;
      showError(null);
      status.textContent = r.checked_on ? `Checks out on ${r.checked_on} (${r.sites} code address${r.sites === 1 ? "" : "es"}).` : r.note || "";
    } catch (e) {
      if (n !== pending) return;
      status.textContent = "";
      showError(e);
    }
  };
  let timer = null;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(check, 250);
  };
  const showKind = () => {
    fTemplate.box.hidden = kind.value !== "log";
    fBy.box.hidden = kind.value !== "count" && kind.value !== "gauge";
    fValue.box.hidden = kind.value !== "gauge";
    for (const f of [fFailure, fFixes, fKeep, fReplay]) f.box.hidden = kind.value !== "verify";
  };
  kind.addEventListener("change", () => (showKind(), soon()));
  targetSel.addEventListener("change", () => ((tags.hidden = targetSel.value !== "tags"), soon()));
  for (const i of [template, condition, by, value, failure, fixes, keep, replay, tags, ttl, maxHits, rate, budget]) i.addEventListener("input", soon);
  const form = el("form", { class: "card", id: "probe-form" },
    el("h2", {}, `Probe ${where}`),
    el("label", { for: "kind" }, "Kind"), kind,
    fTemplate.box, fValue.box, fCondition.box, fBy.box, fFailure.box, fFixes.box, fKeep.box, fReplay.box,
    el("div", { class: "row2" },
      el("div", {}, el("label", { for: "ttl" }, "TTL (s)"), ttl),
      el("div", {}, el("label", { for: "max-hits" }, "Max hits"), maxHits),
      el("div", {}, el("label", { for: "rate" }, "Rate (/s)"), rate),
    ),
    el("label", { for: "budget" }, "Overhead budget (ms per 10 s)"), budget,
    el("label", { for: "target-kind" }, "Target"), targetSel, tags,
    general,
    el("div", { style: "margin-top:14px" }, add),
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    add.disabled = true;
    try {
      const { probe } = await api("POST", "/probes", spec());
      location.hash = `#/events/${encodeURIComponent(probe.id)}`;
    } catch (e) {
      showError(e);
      add.disabled = false;
    }
  });
  showKind();
  panel.replaceChildren(form);
  template.focus();
  soon();
}

// ---- probes -------------------------------------------------------------------------------

async function viewProbes(show) {
  const { probes } = await api("GET", "/probes?all=true");
  const shown = await Promise.all(probes.map((p) => api("GET", `/probes/${encodeURIComponent(p.id)}`).then((r) => r.probe)));
  const rows = shown.reverse().map((p) =>
    el("tr", { "data-probe": p.id },
      el("td", {}, el("a", { href: `#/events/${encodeURIComponent(p.id)}` }, p.id)),
      el("td", {}, p.kind),
      el("td", { class: "mono" }, p.location),
      el("td", { class: "mono" }, p.template || p.by || ""),
      el("td", { class: "mono" }, p.condition || ""),
      el("td", {}, p.target),
      el("td", {}, stateBadge(p.state), p.paused_reason ? el("div", { class: "muted" }, p.paused_reason) : null),
      el("td", {}, (p.instances || []).map((i) =>
        el("div", { class: "mono" }, `${i.instance} `, stateBadge(i.state), ` ${i.hits} hits, ${i.dropped} dropped`,
          i.last_error ? el("div", { class: i.state === "paused" ? "muted" : "error" }, i.last_error) : null))),
      el("td", { class: "mono" }, p.hits),
      el("td", {},
        p.state === "paused"
          ? guarded(el("button", { class: "secondary", "data-resume": p.id, title: "Put it back where its overhead budget paused it", onclick: async (ev) => {
              ev.target.disabled = true;
              await api("POST", `/probes/${encodeURIComponent(p.id)}/resume`, {});
              route();
            } }, "Resume"))
          : null,
        " ",
        p.state === "active" || p.state === "paused"
          ? guarded(el("button", { class: "danger", "data-remove": p.id, onclick: async (ev) => {
              ev.target.disabled = true;
              await api("DELETE", `/probes/${encodeURIComponent(p.id)}`);
              route();
            } }, "Remove"))
          : ""),
    ),
  );
  show(
    el("h1", {}, "Probes"),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["Probe", "Kind", "Location", "Template / by", "Condition", "Target", "State", "Instances", "Hits", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 10, class: "empty" }, "No probes yet. Open an instance's code and click a line."))),
    ),
  );
}

// ---- events -------------------------------------------------------------------------------

let stream = null;

function stopStream() {
  if (stream) stream.abort();
  stream = null;
}

/// Follows /api/v1/events/stream (server-sent events) with the token in a header (EventSource
/// cannot send one), resuming from the last event seen after a reconnect.
function follow(probe, onEvent, onState) {
  const ctl = new AbortController();
  stream = ctl;
  let last = null;
  const run = async () => {
    while (!ctl.signal.aborted) {
      try {
        const q = probe ? `?probe=${encodeURIComponent(probe)}` : "";
        const res = await fetch(`/api/v1/events/stream${q}`, {
          headers: { Authorization: `Bearer ${session.token}`, "x-periscope-via": "web", ...(last ? { "Last-Event-ID": last } : {}) },
          signal: ctl.signal,
        });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        onState("live");
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let id = null, data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) id = line.slice(3).trim();
              else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
            }
            if (!data) continue;
            if (id) last = id;
            try {
              onEvent(JSON.parse(data));
            } catch (_) { /* not an event */ }
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  run();
}

async function viewEvents(show, probe) {
  const { probes } = await api("GET", "/probes?all=true");
  const pick = el("select", { id: "event-probe", "aria-label": "Probe" },
    el("option", { value: "" }, "all probes"),
    ...probes.map((p) => el("option", { value: p.id, selected: p.id === probe }, `${p.id} ${p.kind} ${p.location}`)));
  pick.addEventListener("change", () => (location.hash = `#/events/${encodeURIComponent(pick.value)}`));
  const live = el("span", { class: "muted", id: "stream-state" }, "connecting…");
  const charts = el("div", { class: "charts" });
  const list = el("div", { class: "events", id: "events" });
  const empty = el("div", { class: "empty" }, "Waiting for events…");
  list.append(empty);
  if (!show(
    el("h1", {}, "Events"),
    el("div", { class: "toolbar" }, el("div", {}, el("label", { for: "event-probe" }, "Probe"), pick), live),
    charts,
    list,
  )) return;
  const series = new Map();
  const MAX = 300;
  follow(probe || null, (e) => {
    empty.remove();
    if (e.kind === "count" || e.kind === "metric") chartPoint(charts, series, e);
    list.prepend(renderEvent(e));
    while (list.childElementCount > MAX) list.lastElementChild.remove();
  }, (s) => {
    live.textContent = s === "live" ? "● live" : "reconnecting…";
    // How many times the stream connected: a test hook, and a hint that it resumed.
    if (s === "live") live.dataset.connects = String(Number(live.dataset.connects || 0) + 1);
  });
  // A verify probe's verdict, beside its example events (after `follow`, whose stream it
  // lives as long as).
  const chosen = probes.find((p) => p.id === probe);
  if (chosen && chosen.kind === "verify") verifyPanel(chosen.id, charts);
}

/// An event in the words every surface uses (`text`, given by the server from the one text
/// form); a snapshot's values also open as a tree.
function renderEvent(e) {
  const box = el("div", { class: "event", "data-kind": e.kind, "data-seq": e.seq });
  const text = e.text ?? JSON.stringify(e);
  if (e.kind === "snapshot") box.append(el("div", { class: "msg" }, text.split("\n")[0]), snapshotTree(e));
  else box.append(el("div", { class: e.kind === "error" ? "msg error" : "msg", "data-metric": e.metric }, text));
  return box;
}

function snapshotTree(s) {
  const root = el("details", { class: "tree snapshot" });
  const title = s.failure
    ? `${s.failure.kind === "panic" ? "panic" : s.failure.signal}: ${s.failure.message || s.failure.address || ""}`
    : `snapshot, ${s.frames.length} frames`;
  root.append(el("summary", {}, title));
  if (s.watches && Object.keys(s.watches).length) {
    const w = el("details", { class: "tree", open: true }, el("summary", {}, "watches"));
    for (const [k, v] of Object.entries(s.watches)) w.append(valueNode(k, v));
    root.append(w);
  }
  s.frames.forEach((f, i) => {
    const vars = Object.entries(f.variables || {});
    const at = f.file ? ` at ${f.file.split("/").pop()}:${f.line ?? "?"}` : "";
    const fr = el("details", { class: "tree frame", open: i === 0 && vars.length > 0 }, el("summary", {}, `#${i} ${f.function}${at}`));
    for (const [k, v] of vars) fr.append(valueNode(k, v));
    root.append(fr);
  });
  return root;
}

/// A typed value as the language shows it: scalars on one line, composites as a subtree.
function valueNode(name, v) {
  const children = composite(v);
  if (!children) return el("div", { class: "kv", "data-var": name }, el("span", { class: "k" }, `${name}: `), scalar(v));
  const d = el("details", { class: "tree", "data-var": name }, el("summary", {}, `${name}: `, el("span", { class: "muted" }, summaryOf(v))));
  d.addEventListener("toggle", () => {
    if (d.open && d.childElementCount === 1) for (const [k, c] of children) d.append(valueNode(k, c));
  }, { once: false });
  return d;
}

function composite(v) {
  switch (v.kind) {
    case "struct": return Object.entries(v.fields || {});
    case "enum": return v.fields && Object.keys(v.fields).length ? Object.entries(v.fields) : null;
    case "list": return (v.items || []).map((x, i) => [String(i), x]);
    case "map": return (v.entries || []).map((e) => [plain(e.key), e.value]);
    // A reference opens onto what it points at, as a reader of the code thinks of it.
    case "pointer": return v.target ? composite(v.target) || [["*", v.target]] : null;
    default: return null;
  }
}

function summaryOf(v) {
  const t = v.type ? `${v.type} ` : "";
  switch (v.kind) {
    case "list": return `${t}[${v.len} item${v.len === 1 ? "" : "s"}${v.truncated ? ", truncated" : ""}]`;
    case "map": return `${t}{${v.len} entr${v.len === 1 ? "y" : "ies"}${v.truncated ? ", truncated" : ""}}`;
    case "enum": return `${v.variant}(…)`;
    case "pointer": return `${t}${v.address}`;
    default: return `${t}{…}`;
  }
}

function plain(v) {
  if (v === null || typeof v !== "object") return String(v);
  if (v.kind === "string") return JSON.stringify(v.value);
  if ("value" in v) return String(v.value);
  if (v.kind === "enum") return v.variant;
  return v.kind;
}

function scalar(v) {
  switch (v.kind) {
    case "string": return el("span", { class: "v-str" }, JSON.stringify(v.value), v.truncated ? el("span", { class: "v-trunc" }, ` … (${v.len} bytes, truncated)`) : null);
    case "int": case "float": return el("span", { class: "v-num" }, String(v.value));
    case "bool": case "char": return el("span", { class: "v-num" }, String(v.value));
    case "enum": return el("span", { class: "v-enum" }, v.variant);
    case "redacted": return el("span", { class: "v-red" }, "redacted");
    case "unavailable": return el("span", { class: "v-red" }, `<${v.reason || "unavailable"}>`);
    case "pointer": return el("span", { class: "v-num" }, v.symbol || v.address);
    case "truncated": return el("span", { class: "v-trunc" }, "… truncated");
    default: return el("span", {}, v.value !== undefined ? String(v.value) : summaryOf(v));
  }
}

/// Counters as live charts: hits per interval, one small line per probe and instance. A
/// hand-drawn SVG polyline: a charting library would outweigh the rest of the console.
function chartPoint(box, series, e) {
  const key = `${e.probe} ${e.instance}`;
  let s = series.get(key);
  if (!s) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 300 60");
    svg.setAttribute("preserveAspectRatio", "none");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#067647");
    line.setAttribute("stroke-width", "2");
    svg.append(line);
    const label = el("div", { class: "muted mono" }, key);
    const node = el("div", { class: "chart", "data-chart": key }, label, svg);
    box.append(node);
    s = { points: [], line, label };
    series.set(key, s);
  }
  const [point, text] = chartFigure(e);
  s.points.push(point);
  if (s.points.length > 60) s.points.shift();
  const max = Math.max(1, ...s.points);
  // One interval is a flat line until the next arrives.
  const pts = s.points.length === 1 ? [s.points[0], s.points[0]] : s.points;
  const step = 300 / Math.max(1, pts.length - 1);
  s.line.setAttribute("points", pts.map((p, i) => `${(i * step).toFixed(1)},${(58 - (p / max) * 54).toFixed(1)}`).join(" "));
  s.label.textContent = `${key}: ${text}`;
}

/// The value a chart plots for an event, and its label: a counter's hits per second, a
/// duration's mean, a gauge's last value.
function chartFigure(e) {
  if (e.kind === "metric" && e.metric === "duration") return [e.count ? e.sum / e.count : 0, `mean ${nanos(e.count ? e.sum / e.count : 0)}, ${e.count} calls`];
  if (e.kind === "metric") return [e.last, `last ${e.last}, min ${e.min}, max ${e.max}`];
  const rate = e.interval_seconds > 0 ? e.hits / e.interval_seconds : e.hits;
  return [rate, `${rate.toFixed(1)} hits/s, total ${e.total}`];
}

function nanos(v) {
  if (v >= 1e9) return `${(v / 1e9).toFixed(3)}s`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(3)}ms`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}µs`;
  return `${Math.round(v)}ns`;
}

/// A verify probe's result across instances, as a table per candidate, refreshed while the
/// view is open.
function verifyPanel(id, box) {
  const table = el("table", { id: "verify-table" });
  const hits = el("p", { class: "muted", id: "verify-hits" });
  box.before(el("div", { class: "card", style: "margin-bottom:12px" }, el("h2", {}, "Verification"), hits, table));
  const mine = stream;
  const cells = ["failing", "fixed", "not_fixed", "passing", "unchanged", "changed", "broken", "inconclusive"];
  const refresh = async () => {
    if (stream !== mine) return;
    try {
      const r = await api("GET", `/probes/${encodeURIComponent(id)}/verify`);
      hits.textContent = `${r.hits} hits`;
      table.replaceChildren(
        el("thead", {}, el("tr", {}, el("th", {}, "Candidate"), ...cells.map((c) => el("th", {}, c.replace("_", " "))), el("th", {}, "Verdict"))),
        el("tbody", {}, r.candidates.map((c) =>
          el("tr", { "data-candidate": c.name },
            el("td", { class: "mono" }, c.name),
            ...cells.map((k) => el("td", { class: "mono", "data-cell": k }, c[k])),
            el("td", {}, c.verdict)))),
      );
    } catch (_) { /* shown again at the next refresh */ }
    setTimeout(refresh, 2000);
  };
  refresh();
}

// ---- audit --------------------------------------------------------------------------------

async function viewAudit(show) {
  const { entries } = await api("GET", "/audit");
  const rows = entries.slice().reverse().map((a) =>
    el("tr", { "data-audit": a.id },
      el("td", { class: "mono" }, a.ts),
      el("td", {}, a.actor),
      el("td", { class: "mono" }, a.action),
      el("td", { class: "mono" }, a.target),
      el("td", {}, a.outcome),
      el("td", { class: "mono" }, a.via),
      el("td", { class: "mono" }, a.remote),
    ),
  );
  show(
    el("h1", {}, "Audit"),
    el("table", {},
      el("thead", {}, el("tr", {}, ...["Time", "Who", "Action", "Target", "Outcome", "Via", "From"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    ),
  );
}

// ---- start --------------------------------------------------------------------------------

(async () => {
  if (!session.token) return signOut();
  try {
    await signIn(session.token);
    route();
  } catch (_) {
    signOut();
  }
})();
