// Vigía's console: a small single-page app over the collector's JSON API and live feed.
//
// No framework and no build step: the page is built with createElement/textContent only
// (never innerHTML), so text from devices and users is always data, and the strict CSP
// (script-src 'self', no inline script or style) holds. State lives in `S`; the DOM is
// rebuilt from it per view, except the incident rows (updated in place, keyed by number)
// and open forms (never rebuilt by a live update), so the feed never wipes a selection
// or a half-filled form.
"use strict";

(() => {
  const WORDS = window.VIGIA_I18N || { es: {}, en: {} };
  const $ = (id) => document.getElementById(id);

  const STATES = [
    "registered", "validating", "needs_info", "verifying", "diagnosed", "level1", "level2",
    "level3", "waiting_provider", "resolved", "reopened", "closed",
  ];
  const PRIORITIES = ["P1", "P2", "P3", "P4"];
  const FILTERS = ["mine", "state", "level", "priority", "group", "assignee", "device", "tag", "kind", "q"];
  const LIST_LIMIT = 200;
  // The actions a bulk request may carry, with the fields each takes.
  const BULK = {
    assign: [{ name: "assignee", type: "person" }, { name: "group", type: "group" }],
    escalate: [{ name: "to", type: "level" }, { name: "why", type: "text", required: true }],
    note: [{ name: "text", type: "text", required: true }],
    resolve: [{ name: "solution", type: "text", required: true }],
  };

  const S = {
    session: null,
    locale: browserLocale(),
    tz: undefined,
    view: { name: "none" },
    incidents: new Map(), // the list view's incidents, by number
    rows: new Map(), // number -> <tr>
    selected: new Set(),
    cursor: null, // the incident number marked with j/k
    loading: false,
    buffered: [], // feed events that arrived while a list was loading
    listGen: 0,
    devices: new Map(),
    detail: null,
    formOpen: null, // the name of the action whose form is open on the incident page
    pendingAction: null, // an action to open once the incident page is shown
    feed: null,
    feedObjects: 0,
    timers: {},
  };

  // ---------------------------------------------------------------- words, numbers, dates

  function browserLocale() {
    return (navigator.language || "en").toLowerCase().startsWith("es") ? "es" : "en";
  }

  function t(key, vars) {
    const own = WORDS[S.locale] || {};
    let s = key in own ? own[key] : key in WORDS.en ? WORDS.en[key] : key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] === undefined ? "" : String(vars[k])));
    return s;
  }

  // A word for `key` if the dictionary has one, else `fallback` (names from the server
  // that the dictionary may not know: a new fault kind, a report category).
  function tOr(key, fallback) {
    const own = WORDS[S.locale] || {};
    return key in own ? own[key] : fallback;
  }

  function validZone(tz) {
    if (!tz) return undefined;
    try {
      new Intl.DateTimeFormat("en", { timeZone: tz });
      return tz;
    } catch (_) {
      return undefined;
    }
  }

  function fmtDate(ms) {
    if (ms === null || ms === undefined) return "—";
    return new Intl.DateTimeFormat(S.locale, {
      dateStyle: "medium", timeStyle: "short", timeZone: S.tz,
    }).format(new Date(ms));
  }

  // A day, for what is set by the day (a contract's period, a meeting's minutes): the
  // server and the CLI keep those as UTC days, so they read the same in every zone.
  function fmtDay(ms) {
    if (ms === null || ms === undefined) return "—";
    return new Intl.DateTimeFormat(S.locale, { dateStyle: "medium", timeZone: "UTC" }).format(new Date(ms));
  }

  function fmtNum(n, opts) {
    return new Intl.NumberFormat(S.locale, opts).format(n);
  }

  // "2 h 5 min": the two largest units of a duration.
  function fmtDuration(ms) {
    const units = [["day", 86400000], ["hour", 3600000], ["minute", 60000], ["second", 1000]];
    const parts = [];
    let rest = Math.max(0, Math.round(ms));
    for (const [unit, size] of units) {
      const n = Math.floor(rest / size);
      if (n > 0 || (unit === "second" && parts.length === 0)) {
        parts.push(fmtNum(n, { style: "unit", unit, unitDisplay: "short" }));
        rest -= n * size;
      }
      if (parts.length === 2) break;
    }
    return parts.join(" ");
  }

  function fmtAgo(ms) {
    if (!ms) return "—";
    const rtf = new Intl.RelativeTimeFormat(S.locale, { numeric: "auto" });
    const s = Math.round((ms - Date.now()) / 1000);
    const a = Math.abs(s);
    if (a < 60) return rtf.format(s, "second");
    if (a < 3600) return rtf.format(Math.round(s / 60), "minute");
    if (a < 86400) return rtf.format(Math.round(s / 3600), "hour");
    return rtf.format(Math.round(s / 86400), "day");
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["byte", "kilobyte", "megabyte", "gigabyte", "terabyte"];
    let i = 0;
    let v = n;
    while (v >= 1000 && i < units.length - 1) {
      v /= 1000;
      i += 1;
    }
    return fmtNum(v, { style: "unit", unit: units[i], maximumFractionDigits: 1 });
  }

  const stateName = (s) => tOr("state." + s, s);
  const kindName = (k) => tOr("kind." + k, k);
  const actionName = (a) => tOr("action." + a, String(a).replace(/_/g, " "));
  const fieldName = (f) => tOr("field." + f, String(f).replace(/_/g, " "));
  const choiceName = (c) => tOr("choice." + c, String(c).replace(/_/g, " "));
  const severityName = (s) => tOr("severity." + s, s);
  const levelName = (n) => tOr("level." + n, "L" + n);

  // ---------------------------------------------------------------- DOM

  // An element with attributes and children; strings become text nodes, never markup.
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = String(v);
      else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      else if (k === "data") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : kid === RESERVED ? reservedMark() : document.createTextNode(String(kid)));
    }
    return e;
  }

  const link = (href, text, cls) => h("a", { href, "data-link": true, class: cls }, text);
  const incidentHref = (n) => "/incidents/" + encodeURIComponent(n);
  const deviceHref = (d) => "/devices/" + encodeURIComponent(d);

  function section(title, id, ...kids) {
    return h("section", { class: "card", id }, h("h2", {}, title), ...kids);
  }

  // A definition list of [label, value] pairs, skipping empty values.
  // What the server puts in a field the caller is not cleared to read (information
  // classification): shown as a marked placeholder, never as if it were the data.
  const RESERVED = "[reserved]";
  function reservedMark() {
    const e = document.createElement("span");
    e.className = "reserved";
    e.title = t("reserve.hidden_title");
    e.textContent = "🔒 " + t("reserve.placeholder");
    return e;
  }

  function facts(pairs) {
    const dl = h("dl", { class: "facts" });
    for (const [k, v] of pairs) {
      if (v === null || v === undefined || v === "") continue;
      dl.append(h("dt", {}, k), h("dd", {}, v));
    }
    return dl;
  }

  function table(cls, headers, rows) {
    return h("table", { class: cls },
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows));
  }

  // A cell that keeps its column's name for the stacked phone layout.
  const td = (label, ...kids) => h("td", { "data-label": label }, ...kids);

  function toast(text, bad) {
    const el = $("toast");
    el.textContent = text;
    el.className = bad ? "bad" : "";
    el.hidden = false;
    clearTimeout(S.timers.toast);
    S.timers.toast = setTimeout(() => { el.hidden = true; }, 6000);
  }

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || (status ? "HTTP " + status : t("error.network")));
      this.status = status;
      this.code = body && body.code;
    }
  }

  async function api(method, url, body) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    // Every state-changing request made with the cookie carries the session's token.
    if (method !== "GET" && S.session && S.session.csrf) headers["x-csrf-token"] = S.session.csrf;
    let r;
    try {
      r = await fetch(url, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      throw new ApiError(0, { code: "network", error: t("error.network") });
    }
    if (r.status === 204) return null;
    let data = null;
    try {
      data = await r.json();
    } catch (_) {
      data = null;
    }
    if (!r.ok) {
      const err = new ApiError(r.status, data);
      err.retryAfter = r.headers.get("retry-after");
      if (r.status === 401 && url !== "/api/session") signedOut();
      throw err;
    }
    return data;
  }

  function errorText(e) {
    switch (e.code) {
      case "forbidden":
      case "not_yours":
      case "read_only_token": return e.message ? t("error.forbidden") + " " + e.message : t("error.forbidden");
      case "conflict": return t("error.conflict", { e: e.message });
      case "csrf": return t("error.csrf");
      case "network": return t("error.network");
      default: return t("error.generic", { e: e.message });
    }
  }

  // ---------------------------------------------------------------- session and language

  const ANONYMOUS = { login: null, name: "", roles: [], groups: [], level: null, anonymous: true };

  function setSession(s) {
    S.session = s;
    if (s && s.locale) S.locale = s.locale === "es" ? "es" : "en";
    S.tz = validZone(s && s.time_zone);
    applyWords();
    const who = $("who");
    const signedIn = !!(s && !s.anonymous);
    who.hidden = !signedIn;
    $("logout").hidden = !signedIn;
    $("nav").hidden = !s;
    // The providers' register is for staff (the server refuses it to anyone else).
    const staff = ["viewer", "technician", "service_desk", "admin"].some((r) => (s && s.roles || []).includes(r));
    for (const a of document.querySelectorAll("#nav a[data-staff]")) a.hidden = !staff;
    // Enrolling devices is for administrators (the server refuses it to anyone else).
    const admin = !!(s && (s.roles || []).includes("admin"));
    for (const a of document.querySelectorAll("#nav a[data-admin]")) a.hidden = !admin;
    if (signedIn) {
      const roles = (s.roles || []).map((r) => tOr("role." + r, r)).join(", ");
      who.textContent = (s.name || s.login) + (roles ? " · " + roles : "");
    }
  }

  const hasRole = (r) => !!(S.session && (S.session.roles || []).includes(r));
  const canAct = () => !!(S.session && (S.session.roles || []).some((r) => r !== "viewer"));

  // The static words of the shell, and the help.
  function applyWords() {
    document.documentElement.lang = S.locale;
    document.title = t("app.title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    $("lang").value = S.locale;
    fillZones();
    setLive(S.liveState || "connecting");
    const keys = [["j", "help.j"], ["k", "help.k"], ["Enter", "help.enter"], ["x", "help.x"],
      ["/", "help.slash"], ["e", "help.e"], ["n", "help.n"], ["a", "help.a"], ["u", "help.u"],
      ["f", "help.f"], ["?", "help.help"], ["Esc", "help.esc"]];
    $("help-keys").replaceChildren(...keys.flatMap(([k, w]) => [h("dt", {}, h("kbd", {}, k)), h("dd", {}, t(w))]));
  }

  // The time zone dates are shown in: the account's, or this computer's.
  function fillZones() {
    const sel = $("tz");
    const label = $("tz-label");
    const signedIn = !!(S.session && !S.session.anonymous);
    label.hidden = !signedIn;
    if (!signedIn) return;
    const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
    const current = S.session.time_zone || "";
    const names = zones.includes(current) || !current ? zones : [current, ...zones];
    sel.replaceChildren(
      h("option", { value: "" }, t("user.tz_browser")),
      ...names.map((z) => h("option", { value: z }, z.replace(/_/g, " "))));
    sel.value = current;
  }

  async function changeZone(zone) {
    try {
      const s = await api("PUT", "/api/me/preferences", { locale: S.locale, time_zone: zone || null });
      if (s) setSession(s);
    } catch (e) {
      toast(errorText(e), true);
    }
    render();
  }

  async function changeLanguage(locale) {
    S.locale = locale === "es" ? "es" : "en";
    applyWords();
    if (S.session && !S.session.anonymous) {
      try {
        const s = await api("PUT", "/api/me/preferences", {
          locale: S.locale, time_zone: S.session.time_zone || null,
        });
        if (s) setSession(s);
      } catch (e) {
        toast(errorText(e), true);
      }
    }
    render();
  }

  function signedOut() {
    S.session = null;
    stopFeed();
    setSession(null);
    if (route().name !== "login") {
      go("/login?next=" + encodeURIComponent(location.pathname + location.search), true);
    }
  }

  async function logout() {
    try {
      await api("DELETE", "/api/session");
    } catch (_) {
      // Signed out here whatever the server says; the cookie is its business.
    }
    S.selected.clear();
    signedOut();
  }

  // ---------------------------------------------------------------- routing

  function route() {
    const p = location.pathname;
    let m;
    if (p === "/login") return { name: "login" };
    if ((m = p.match(/^\/incidents\/(\d+)$/))) return { name: "incident", number: Number(m[1]) };
    if ((m = p.match(/^\/devices\/([^/]+)$/))) return { name: "device", id: decodeURIComponent(m[1]) };
    if (p === "/fleet") return { name: "fleet" };
    if (p === "/providers") return { name: "providers" };
    if (p === "/enrolments") return { name: "enrolments" };
    return { name: "list" };
  }

  function go(path, replace) {
    if (replace) history.replaceState(null, "", path);
    else history.pushState(null, "", path);
    render();
  }

  // Only a path on this site: `next` must never send the user elsewhere.
  function safeNext(next) {
    return next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/login") ? next : "/";
  }

  function render() {
    const r = route();
    S.view = r;
    S.detail = null;
    S.formOpen = null;
    const app = $("app");
    if (!S.session && r.name !== "login") {
      go("/login?next=" + encodeURIComponent(location.pathname + location.search), true);
      return;
    }
    const navOf = { fleet: "/fleet", device: "/fleet", providers: "/providers", enrolments: "/enrolments" };
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("here", r.name !== "login" && a.getAttribute("href") === (navOf[r.name] || "/"));
    }
    switch (r.name) {
      case "login": return renderLogin(app);
      case "incident": return renderIncident(app, r.number);
      case "device": return renderDevice(app, r.id);
      case "fleet": return renderFleet(app);
      case "providers": return renderProviders(app);
      case "enrolments": return renderEnrolments(app);
      default: return renderList(app);
    }
  }

  // ---------------------------------------------------------------- sign in

  function renderLogin(app) {
    if (S.session && !S.session.anonymous) {
      go(safeNext(new URLSearchParams(location.search).get("next")), true);
      return;
    }
    const err = h("p", { class: "error", role: "alert", id: "login-error", hidden: true });
    const login = h("input", { id: "login-name", name: "login", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
    const password = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
    const button = h("button", { type: "submit", class: "primary", id: "login-submit" }, t("login.submit"));
    const form = h("form", { class: "card login", id: "login-form", novalidate: false },
      h("h1", {}, t("login.title")),
      h("label", {}, t("login.login"), login),
      h("label", {}, t("login.password"), password),
      button, err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      err.hidden = true;
      try {
        const s = await api("POST", "/api/session", { login: login.value.trim(), password: password.value });
        setSession(s);
        startFeed();
        go(safeNext(new URLSearchParams(location.search).get("next")), true);
      } catch (e) {
        password.value = "";
        err.textContent = e.status === 401 ? t("login.bad")
          : e.status === 429 ? t("login.rate", { s: e.retryAfter || "?" })
            : t("login.error", { e: e.message });
        err.hidden = false;
        password.focus();
      } finally {
        button.disabled = false;
      }
    });
    app.replaceChildren(form);
    login.focus();
  }

  // ---------------------------------------------------------------- the live feed

  function setLive(state) {
    S.liveState = state;
    const el = $("live");
    el.textContent = t("live." + state);
    el.className = "live " + (state === "live" ? "up" : "down");
    el.dataset.state = state;
  }

  function startFeed() {
    if (S.feed || !S.session) return;
    const es = new EventSource("/api/feed");
    const first = S.feedObjects === 0;
    S.feedObjects += 1;
    S.feed = es;
    setLive("connecting");
    let opened = false;
    es.onopen = () => {
      setLive("live");
      // The browser resends Last-Event-ID when this EventSource reconnects and the server
      // replays what was missed. A new EventSource starts without one: reload instead.
      if (!opened && !first) reloadView();
      opened = true;
    };
    es.onerror = () => {
      setLive("reconnecting");
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (the server refused the stream): ask whether we are still
        // signed in, then start a new stream.
        stopFeed();
        clearTimeout(S.timers.feed);
        S.timers.feed = setTimeout(async () => {
          try {
            const s = await api("GET", "/api/session");
            setSession(s);
            startFeed();
          } catch (e) {
            if (e.status === 401) signedOut();
            else { setLive("reconnecting"); S.timers.feed = setTimeout(startFeed, 5000); }
          }
        }, 2000);
      }
    };
    es.addEventListener("incident", (m) => {
      const ev = parse(m.data);
      if (ev && ev.incident) onIncident(ev.incident);
    });
    es.addEventListener("device", (m) => {
      const ev = parse(m.data);
      if (ev) onDevice(ev);
    });
    es.addEventListener("notification", (m) => {
      const ev = parse(m.data);
      if (ev) onNotification(ev);
    });
    // The server could not resume from our Last-Event-ID (or we fell behind).
    es.addEventListener("reset", reloadView);
    es.addEventListener("lagged", reloadView);
  }

  function stopFeed() {
    if (S.feed) S.feed.close();
    S.feed = null;
    setLive("connecting");
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (_) {
      return null;
    }
  }

  function reloadView() {
    const v = S.view.name;
    if (v === "list") loadList();
    else if (v === "incident") refreshIncident();
    else if (v === "fleet") loadFleet();
    else if (v === "device") loadDevice();
  }

  function onIncident(inc) {
    if (S.view.name === "list") {
      if (S.loading) S.buffered.push(inc);
      else applyIncident(inc, true);
      scheduleCounts();
      // Filters the page cannot judge from a summary (tags, the server's text search)
      // are asked again, a moment later.
      const q = listQuery();
      if (q.tag || q.q) debounce("relist", () => loadList(true), 800);
    } else if (S.view.name === "incident" && S.view.number === inc.number) {
      debounce("detail", refreshIncident, 150);
    } else if (S.view.name === "device" && S.view.id === inc.device) {
      debounce("device", loadDevice, 300);
    } else if (S.view.name === "fleet") {
      debounce("fleet", loadFleet, 500);
    }
  }

  function onDevice(ev) {
    const d = S.devices.get(ev.device);
    if (d) {
      d.online = ev.online;
      d.boot = ev.boot;
      d.last_seen = Date.now();
    }
    if (S.view.name === "fleet") debounce("fleet", loadFleet, 300);
    if (S.view.name === "device" && S.view.id === ev.device) debounce("device", loadDevice, 300);
  }

  // Who did something about a provider request, when, and what they said.
  function stampText(st) {
    return fmtDate(st.at) + " · " + st.by + (st.note ? ": " + st.note : "");
  }

  // A notice in the reader's language, from its kind; the server's English text when
  // the kind is one this page does not know.
  function noticeText(n) {
    const k = n.kind || {};
    const vars = { n: n.incident, from: k.from ? levelName(k.from) : "", to: k.to ? levelName(k.to) : "" };
    if (k.type === "sla_breached") vars.target = tOr("notice.target." + k.target, k.target);
    if (k.type === "network_notice") vars.at = fmtDate(k.agreed_at);
    const key = "notice." + k.type;
    return tOr(key, null) === null ? n.text || "" : t(key, vars);
  }

  function onNotification(n) {
    const box = $("notices");
    const line = h("div", { class: "notice" },
      h("time", {}, fmtDate(Date.now())), " · ",
      n.incident !== undefined ? link(incidentHref(n.incident), t("incident.title", { n: n.incident })) : null,
      " · ", noticeText(n));
    box.prepend(line);
    while (box.children.length > 5) box.lastChild.remove();
  }

  function debounce(name, fn, ms) {
    clearTimeout(S.timers[name]);
    S.timers[name] = setTimeout(fn, ms);
  }

  // ---------------------------------------------------------------- the list

  function listQuery() {
    const p = new URLSearchParams(location.search);
    const q = {};
    for (const k of FILTERS) {
      const v = p.get(k);
      if (v) q[k] = v;
    }
    return q;
  }

  function setListQuery(q) {
    const p = new URLSearchParams();
    for (const k of FILTERS) if (q[k]) p.set(k, q[k]);
    const s = p.toString();
    history.replaceState(null, "", "/" + (s ? "?" + s : ""));
  }

  // What a technician sees first is their own work; everyone else, everything open.
  function defaultQuery() {
    return hasRole("technician") ? { state: "open", mine: "true" } : { state: "open" };
  }

  // Whether an incident summary belongs in the list the filters describe, judged here so
  // a live update lands in place without asking the server.
  function matches(inc, q) {
    const st = q.state || "all";
    if (st === "open" ? inc.state === "closed" : st !== "all" && inc.state !== st) return false;
    if (q.level && String(inc.level) !== q.level) return false;
    if (q.priority && inc.priority !== q.priority) return false;
    if (q.device && inc.device !== q.device) return false;
    if (q.group && inc.group !== q.group) return false;
    if (q.assignee && inc.assignee !== q.assignee) return false;
    if (q.kind && inc.kind !== q.kind && inc.category !== q.kind) return false;
    if (q.mine === "true" && S.session && !S.session.anonymous) {
      const me = S.session;
      // As the server counts it: the service desk works level 1 when it names no level.
      const level = me.level || (hasRole("service_desk") ? 1 : null);
      const mine = (inc.assignee && inc.assignee === me.login)
        || (inc.group && (me.groups || []).includes(inc.group))
        || (!inc.assignee && level !== null && inc.level === level);
      if (!mine) return false;
    }
    if (q.q) {
      const hay = [inc.number, inc.title, inc.device, inc.kind, inc.subject, inc.category,
        inc.assignee, inc.group].join(" ").toLowerCase();
      if (!hay.includes(q.q.toLowerCase())) return false;
    }
    return true;
  }

  function renderList(app) {
    if (!location.search) setListQuery(defaultQuery());
    const q = listQuery();
    S.incidents = new Map();
    S.rows = new Map();

    const field = (name, label, control) => h("label", { class: "f-" + name }, h("span", {}, label), control);
    const sel = (name, options) => h("select", { name, id: "f-" + name },
      options.map(([v, text]) => h("option", { value: v }, text)));
    const inp = (name, extra) => h("input", Object.assign({ name, id: "f-" + name, type: "search", autocomplete: "off" }, extra || {}));

    const form = h("form", { class: "filters", id: "filters", role: "search" },
      h("label", { class: "mine", title: t("filter.mine.help") },
        h("input", { type: "checkbox", name: "mine", id: "f-mine" }), h("span", {}, t("filter.mine"))),
      field("q", t("filter.q"), inp("q", { placeholder: t("filter.q.placeholder") })),
      field("state", t("filter.state"), sel("state", [["open", t("filter.open")], ["all", t("filter.all")],
        ...STATES.map((s) => [s, stateName(s)])])),
      field("level", t("filter.level"), sel("level", [["", t("filter.any")], ...[1, 2, 3].map((n) => [String(n), levelName(n)])])),
      field("priority", t("filter.priority"), sel("priority", [["", t("filter.any")], ...PRIORITIES.map((p) => [p, p])])),
      h("details", { class: "more", id: "f-more" },
        h("summary", {}, t("filter.more")),
        h("div", { class: "more-fields" },
          field("group", t("filter.group"), inp("group")),
          field("assignee", t("filter.assignee"), inp("assignee")),
          field("device", t("filter.device"), inp("device")),
          field("tag", t("filter.tag"), inp("tag")),
          field("kind", t("filter.kind"), inp("kind", { list: "kinds" })),
          h("datalist", { id: "kinds" }, Object.keys(WORDS.en).filter((k) => k.startsWith("kind."))
            .map((k) => h("option", { value: k.slice(5) }, kindName(k.slice(5))))))),
      h("button", { type: "button", class: "link", id: "f-clear" }, t("filter.clear")));
    // On a phone the rarer filters fold away, unless one of them is set.
    const more = form.querySelector("#f-more");
    more.open = !window.matchMedia("(max-width: 720px)").matches
      || ["group", "assignee", "device", "tag", "kind"].some((k) => q[k]);
    for (const k of FILTERS) {
      const el = form.elements[k];
      if (!el) continue;
      if (el.type === "checkbox") el.checked = q[k] === "true";
      else el.value = q[k] || (k === "state" ? "all" : "");
    }
    const changed = () => {
      const nq = {};
      for (const k of FILTERS) {
        const el = form.elements[k];
        if (el.type === "checkbox") { if (el.checked) nq[k] = "true"; } else if (el.value.trim()) nq[k] = el.value.trim();
      }
      setListQuery(nq);
      loadList();
    };
    form.addEventListener("change", (ev) => { if (ev.target.type !== "search") changed(); });
    form.addEventListener("input", (ev) => { if (ev.target.type === "search") debounce("filter", changed, 300); });
    form.addEventListener("submit", (ev) => { ev.preventDefault(); changed(); });
    form.querySelector("#f-clear").addEventListener("click", () => {
      setListQuery({ state: "open" });
      renderList(app);
    });

    const headers = ["", t("col.number"), t("col.state"), t("col.level"), t("col.priority"), t("col.sla"),
      t("col.who"), t("col.severity"), t("col.device"), t("col.what"), t("col.updated")];
    const tbl = table("incidents", headers, []);
    tbl.tBodies[0].id = "rows";
    app.replaceChildren(
      h("div", { class: "list-head" }, h("h1", {}, t("list.title")), h("span", { id: "list-count", class: "muted" })),
      form,
      h("div", { id: "counts", class: "counts" }),
      h("div", { id: "bulk", class: "bulk card", hidden: true }),
      h("div", { class: "table-wrap" }, tbl),
      h("p", { id: "list-empty", class: "empty", hidden: true }, t("list.empty")),
      h("p", { id: "list-more", class: "muted", hidden: true }));
    renderBulk();
    loadList();
    loadCounts();
  }

  async function loadList(quiet) {
    if (S.view.name !== "list") return;
    const gen = ++S.listGen;
    const q = listQuery();
    const p = new URLSearchParams(q);
    p.set("limit", String(LIST_LIMIT));
    S.loading = true;
    if (!quiet && S.incidents.size === 0) $("list-count").textContent = t("list.loading");
    let list;
    try {
      list = await api("GET", "/api/incidents?" + p.toString());
    } catch (e) {
      if (gen === S.listGen) {
        S.loading = false;
        toast(errorText(e), true);
      }
      return;
    }
    if (gen !== S.listGen || S.view.name !== "list") return;
    S.loading = false;
    S.incidents = new Map(list.map((i) => [i.number, i]));
    // Selected incidents stay in view even when they no longer match.
    for (const [n, tr] of S.rows) if (S.selected.has(n) && !S.incidents.has(n) && tr.inc) S.incidents.set(n, tr.inc);
    const buffered = S.buffered;
    S.buffered = [];
    for (const inc of buffered) applyIncident(inc, false);
    renderRows();
    $("list-more").hidden = list.length < LIST_LIMIT;
    $("list-more").textContent = t("list.more", { n: LIST_LIMIT });
  }

  // A summary from the feed: the newer copy wins; the row is updated where it stands.
  function applyIncident(inc, draw) {
    const old = S.incidents.get(inc.number);
    if (old && old.updated_at > inc.updated_at) return;
    const q = listQuery();
    if (matches(inc, q) || S.selected.has(inc.number)) S.incidents.set(inc.number, inc);
    else if (old) S.incidents.delete(inc.number);
    else return;
    if (draw) {
      renderRows();
      const tr = S.rows.get(inc.number);
      if (tr) flash(tr);
    }
  }

  function flash(el) {
    el.classList.remove("flash");
    void el.offsetWidth; // restart the animation
    el.classList.add("flash");
  }

  function renderRows() {
    const tbody = $("rows");
    if (!tbody) return;
    const list = [...S.incidents.values()].sort((a, b) => b.number - a.number);
    const keep = new Set(list.map((i) => i.number));
    for (const [n, tr] of S.rows) {
      if (!keep.has(n)) {
        tr.remove();
        S.rows.delete(n);
      }
    }
    let prev = null;
    for (const inc of list) {
      let tr = S.rows.get(inc.number);
      if (!tr) {
        tr = makeRow(inc.number);
        S.rows.set(inc.number, tr);
      }
      fillRow(tr, inc);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    $("list-empty").hidden = list.length > 0;
    $("list-count").textContent = t(list.length === 1 ? "list.count.one" : "list.count", { n: fmtNum(list.length) });
    if (S.cursor !== null && !S.rows.has(S.cursor)) S.cursor = null;
    markCursor();
  }

  function makeRow(n) {
    const box = h("input", { type: "checkbox", class: "pick", "aria-label": t("col.select") + " " + n });
    box.checked = S.selected.has(n);
    box.addEventListener("change", () => {
      if (box.checked) S.selected.add(n);
      else S.selected.delete(n);
      tr.classList.toggle("picked", box.checked);
      renderBulk();
    });
    const tr = h("tr", { data: { number: String(n) } }, h("td", { class: "c-pick", "data-label": t("col.select") }, box));
    tr.classList.toggle("picked", box.checked);
    tr.addEventListener("click", (ev) => {
      if (ev.target.closest("a, input, button, label")) return;
      S.cursor = n;
      go(incidentHref(n));
    });
    return tr;
  }

  function fillRow(tr, inc) {
    tr.inc = inc;
    // When the server changed it: how fresh the row is (and what the feed's delay is
    // measured against).
    tr.dataset.updated = String(inc.updated_at);
    const sla = slaView(inc.sla);
    const what = h("td", { class: "c-what", "data-label": t("col.what") },
      link(incidentHref(inc.number), inc.title, "title"),
      h("div", { class: "muted" },
        inc.origin === "fault" ? kindName(inc.kind) + " · " + inc.subject : t("origin." + inc.origin) + " · " + inc.kind + " · " + inc.subject,
        inc.flapping ? h("span", { class: "flag" }, " · " + t("incident.flapping")) : null,
        inc.origin === "fault" && !inc.fault_active ? h("span", { class: "flag ok" }, " · " + t("incident.fault_cleared")) : null));
    const cells = [
      td(t("col.number"), link(incidentHref(inc.number), String(inc.number), "num")),
      td(t("col.state"), h("span", { class: "state s-" + inc.state }, stateName(inc.state))),
      td(t("col.level"), h("span", { title: levelName(inc.level) }, t("level.short", { n: inc.level }))),
      td(t("col.priority"), inc.priority ? h("span", { class: "prio " + inc.priority }, inc.priority) : "—"),
      td(t("col.sla"), h("span", { class: sla.cls }, sla.text)),
      td(t("col.who"), inc.assignee || inc.group || h("span", { class: "muted" }, t("unassigned"))),
      td(t("col.severity"), inc.severity ? h("span", { class: "sev " + inc.severity }, severityName(inc.severity)) : "—"),
      td(t("col.device"), inc.device ? link(deviceHref(inc.device), inc.device) : "—"),
      what,
      td(t("col.updated"), h("time", { title: fmtDate(inc.updated_at) }, fmtAgo(inc.updated_at))),
    ];
    while (tr.cells.length > 1) tr.lastChild.remove();
    tr.append(...cells);
    tr.classList.toggle("breached", !!(inc.sla && inc.sla.breached));
  }

  function slaView(sla) {
    if (!sla || sla.due === null || sla.due === undefined) {
      return { text: t("sla.none"), cls: "sla none" };
    }
    const left = sla.due - Date.now();
    let cls = "sla";
    let text = left < 0 ? t("sla.breached", { t: fmtDuration(-left) }) : t("sla.left", { t: fmtDuration(left) });
    if (sla.breached || left < 0) cls += " breached";
    if (sla.paused) {
      cls += " paused";
      text = "⏸ " + t("sla.paused") + " · " + text;
    }
    return { text, cls };
  }

  function markCursor() {
    for (const [n, tr] of S.rows) tr.classList.toggle("cursor", n === S.cursor);
  }

  function moveCursor(step) {
    const order = [...S.rows.keys()];
    if (!order.length) return;
    let i = order.indexOf(S.cursor);
    i = i < 0 ? (step > 0 ? 0 : order.length - 1) : Math.min(order.length - 1, Math.max(0, i + step));
    S.cursor = order[i];
    markCursor();
    const tr = S.rows.get(S.cursor);
    if (tr && tr.scrollIntoView) tr.scrollIntoView({ block: "nearest" });
  }

  function toggleCursorSelection() {
    const tr = S.rows.get(S.cursor);
    if (!tr) return;
    const box = tr.querySelector("input.pick");
    box.checked = !box.checked;
    box.dispatchEvent(new Event("change"));
  }

  function scheduleCounts() {
    debounce("counts", loadCounts, 400);
  }

  async function loadCounts() {
    let c;
    try {
      c = await api("GET", "/api/counts");
    } catch (_) {
      return; // the list still works without its counts
    }
    const box = $("counts");
    if (!box || S.view.name !== "list") return;
    const chip = (label, n, onClick, cls) => h("button", { type: "button", class: "count " + (cls || ""), onclick: onClick },
      h("span", {}, label), h("b", {}, fmtNum(n)));
    const setFilter = (k, v) => () => {
      const q = listQuery();
      q[k] = v;
      setListQuery(q);
      renderList($("app"));
    };
    const byState = STATES.filter((s) => c.by_state && c.by_state[s])
      .map((s) => chip(stateName(s), c.by_state[s], setFilter("state", s), "s-" + s));
    const byLevel = ["1", "2", "3"].map((l) => chip(levelName(l), (c.by_level && c.by_level[l]) || 0, setFilter("level", l)));
    box.replaceChildren(
      h("div", { class: "count-group", id: "counts-state" }, h("span", { class: "muted" }, t("counts.by_state")), byState),
      h("div", { class: "count-group", id: "counts-level" }, h("span", { class: "muted" }, t("counts.by_level")), byLevel));
  }

  // ---------------------------------------------------------------- bulk actions

  function renderBulk(action) {
    const box = $("bulk");
    if (!box) return;
    if (S.selected.size === 0 || !canAct()) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    // Leave a half-filled bulk form alone when only the selection count changes.
    const existing = box.querySelector("form");
    if (existing && !action) {
      box.querySelector(".bulk-count").textContent = t("bulk.selected", { n: S.selected.size });
      box.hidden = false;
      return;
    }
    const chosen = action || "note";
    const pick = h("select", { id: "bulk-action", name: "action" },
      Object.keys(BULK).map((a) => h("option", { value: a }, actionName(a))));
    pick.value = chosen;
    const fieldsBox = h("div", { class: "bulk-fields" }, fieldControls(BULK[chosen]));
    pick.addEventListener("change", () => fieldsBox.replaceChildren(...fieldControls(BULK[pick.value])));
    const out = h("div", { class: "bulk-out", role: "status" });
    const form = h("form", { id: "bulk-form" },
      h("div", { class: "bulk-row" },
        h("strong", { class: "bulk-count" }, t("bulk.selected", { n: S.selected.size })),
        h("label", {}, h("span", {}, t("bulk.action")), pick),
        h("button", { type: "submit", class: "primary", id: "bulk-apply" }, t("bulk.apply")),
        h("button", { type: "button", class: "link", id: "bulk-clear", onclick: clearSelection }, t("bulk.clear"))),
      fieldsBox, out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = pick.value;
      const fields = readFields(form, BULK[name]);
      const numbers = [...S.selected].sort((a, b) => a - b);
      form.querySelector("#bulk-apply").disabled = true;
      try {
        const r = await api("POST", "/api/incidents/bulk", { numbers, action: name, fields });
        const results = (r && r.results) || [];
        const failed = results.filter((x) => !x.ok);
        for (const x of results) if (x.ok) S.selected.delete(x.number);
        out.replaceChildren(h("p", {}, t("bulk.result", { ok: results.length - failed.length, failed: failed.length })),
          failed.length ? h("ul", { class: "error" }, failed.map((x) => h("li", {}, t("bulk.failed", { n: x.number, e: x.error || x.code })))) : null);
        for (const [n, tr] of S.rows) {
          const box2 = tr.querySelector("input.pick");
          box2.checked = S.selected.has(n);
          tr.classList.toggle("picked", box2.checked);
        }
        if (!failed.length) {
          toast(t("bulk.result", { ok: results.length, failed: 0 }));
          renderBulk("note");
        } else {
          box.querySelector(".bulk-count").textContent = t("bulk.selected", { n: S.selected.size });
        }
        loadList(true);
        scheduleCounts();
      } catch (e) {
        out.replaceChildren(h("p", { class: "error", role: "alert" }, errorText(e)));
      } finally {
        const b = form.querySelector("#bulk-apply");
        if (b) b.disabled = false;
      }
    });
    box.replaceChildren(form);
    box.hidden = S.selected.size === 0;
  }

  function clearSelection() {
    S.selected.clear();
    for (const tr of S.rows.values()) {
      tr.querySelector("input.pick").checked = false;
      tr.classList.remove("picked");
    }
    renderBulk();
  }

  // ---------------------------------------------------------------- forms from field specs

  // The controls for an action's fields, as the server describes them in `allowed`. An
  // optional choice starts empty, worded by `field.<name>.default` or by the spec's own
  // `blank` key.
  function fieldControls(fields, current) {
    return (fields || []).map((f) => {
      const id = "fld-" + f.name;
      const attrs = { name: f.name, id, required: !!f.required };
      let control;
      const options = (list, blank) => [
        blank ? h("option", { value: "" }, tOr(f.blank || "field." + f.name + ".default", t("field.default"))) : null,
        ...list.map(([v, text]) => h("option", { value: v }, text)),
      ];
      if (f.choices && f.choices.length) {
        control = h("select", attrs, options(f.choices.map((c) => [String(c), choiceName(c)]), !f.required));
      } else if (f.type === "level") {
        const above = current && current.level ? [1, 2, 3].filter((n) => n > current.level) : [1, 2, 3];
        control = h("select", attrs, options((above.length ? above : [1, 2, 3]).map((n) => [String(n), levelName(n)]), !f.required));
      } else if (f.type === "priority") {
        control = h("select", attrs, options(PRIORITIES.map((p) => [p, p]), !f.required));
      } else if (f.type === "bool") {
        control = h("input", { type: "checkbox", name: f.name, id });
      } else if (f.type === "time") {
        control = h("input", Object.assign({ type: "datetime-local" }, attrs));
      } else if (f.type === "number") {
        control = h("input", Object.assign({ type: "number", min: "1", step: "1" }, attrs));
      } else if (f.type === "list") {
        control = h("textarea", Object.assign({ rows: 3 }, attrs));
      } else if (f.type === "person" || f.type === "group") {
        control = h("input", Object.assign({ type: "text", autocomplete: "off", spellcheck: "false" }, attrs));
      } else {
        control = h("textarea", Object.assign({ rows: 2 }, attrs));
      }
      control.dataset.type = f.type || "text";
      return h("label", { class: "field" + (f.type === "bool" ? " check" : "") },
        h("span", {}, fieldName(f.name), f.required ? h("em", { class: "req" }, " (" + t("action.required") + ")") : null),
        control);
    });
  }

  // The JSON body for `fields` from the form's controls; optional empty ones are left out.
  function readFields(form, fields) {
    const body = {};
    for (const f of fields || []) {
      const el = form.elements[f.name];
      if (!el) continue;
      if (f.type === "bool") {
        body[f.name] = el.checked;
        continue;
      }
      const v = el.value.trim();
      if (!v) continue;
      if (f.type === "level" || f.type === "number") body[f.name] = Number(v);
      else if (f.type === "list") body[f.name] = v.split(/\n|,/).map((x) => x.trim()).filter(Boolean);
      else if (f.type === "time") body[f.name] = new Date(v).getTime();
      else body[f.name] = v;
    }
    return body;
  }

  // ---------------------------------------------------------------- the incident page

  async function renderIncident(app, n) {
    app.replaceChildren(h("p", { class: "muted" }, t("list.loading")));
    let d;
    try {
      d = await api("GET", "/api/incidents/" + n);
    } catch (e) {
      if (S.view.name !== "incident" || S.view.number !== n) return;
      app.replaceChildren(link("/", t("incident.back"), "back"),
        h("p", { class: "error", role: "alert" }, e.status === 404 ? t("incident.not_found", { n }) : errorText(e)));
      return;
    }
    if (S.view.name !== "incident" || S.view.number !== n) return;
    S.detail = d;
    app.replaceChildren(
      h("div", { class: "incident-head", id: "inc-head" }),
      h("div", { class: "incident-grid" },
        h("div", { class: "col-main" },
          section(t("incident.actions"), "inc-actions"),
          section(t("incident.evidence"), "inc-origin"),
          section(t("incident.notes"), "inc-notes"),
          section(t("incident.audit"), "inc-audit"),
          section(t("incident.notifications"), "inc-notify")),
        h("div", { class: "col-side" },
          section(t("incident.device"), "inc-device"),
          section(t("incident.facts"), "inc-facts"),
          h("div", { id: "inc-extra" }))));
    fillIncident(d, true);
    if (!d.device) {
      // A service on something no agent watches (the network): no device to show.
      $("inc-device").append(h("p", { class: "muted", id: "inc-no-device" }, t("incident.no_device")));
    } else {
      if (d.device_info) showIncidentDevice(d.device, d.device_info);
      loadIncidentDevice(d.device);
    }
    if (S.pendingAction) {
      const a = S.pendingAction;
      S.pendingAction = null;
      openAction(a);
    }
  }

  async function refreshIncident() {
    if (S.view.name !== "incident" || !S.detail) return;
    const n = S.view.number;
    try {
      const d = await api("GET", "/api/incidents/" + n);
      if (S.view.name !== "incident" || S.view.number !== n) return;
      S.detail = d;
      fillIncident(d, !S.formOpen);
    } catch (_) {
      // Keep what is shown; the next event or a reload will try again.
    }
  }

  // Fills the incident page from `d`. The actions are redrawn only when `actions` is
  // true: a live update never throws away a form the user is filling in.
  function fillIncident(d, actions) {
    // The detail carries the stored clocks as `sla`; the list's view of them is `sla_brief`.
    const sla = slaView(d.sla_brief || d.sla);
    const fill = (id, ...kids) => {
      const el = $(id);
      if (!el) return;
      const title = el.querySelector("h2");
      // As h() does: nested lists flattened, absent parts left out (never "null").
      const parts = kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false);
      el.replaceChildren(...(title ? [title] : []), ...parts);
    };
    $("inc-head").replaceChildren(
      link("/", t("incident.back"), "back"),
      h("h1", {}, h("span", { class: "num" }, t("incident.title", { n: d.number })), " · ", h("span", { id: "inc-title" }, d.title)),
      h("div", { class: "chips" },
        h("span", { class: "state s-" + d.state, id: "inc-state" }, stateName(d.state)),
        h("span", { class: "chip", id: "inc-level" }, levelName(d.level)),
        d.priority ? h("span", { class: "prio chip " + d.priority }, d.priority) : null,
        d.severity ? h("span", { class: "sev chip " + d.severity }, severityName(d.severity)) : null,
        h("span", { class: "chip " + sla.cls }, t("col.sla") + ": " + sla.text),
        d.flapping ? h("span", { class: "chip flag" }, t("incident.flapping")) : null));

    if (actions) fillActions(d);
    else {
      const box = $("inc-actions");
      if (box && !box.querySelector(".stale")) {
        box.querySelector("h2").after(h("p", { class: "stale muted", role: "status" }, t("incident.changed")));
      }
    }

    const o = d.origin || {};
    if (o.type === "service") {
      $("inc-origin").querySelector("h2").textContent = t("incident.service");
      fill("inc-origin",
        h("p", { class: "muted" }, t("incident.service_hint")),
        facts([[t("incident.category"), d.classification && d.classification.category],
          [t("incident.requester"), o.requester]]),
        h("h3", {}, t("incident.description")),
        h("p", { class: "text" }, o.summary || ""),
        o.text ? h("pre", { class: "text" }, o.text) : null);
    } else if (o.type === "report") {
      $("inc-origin").querySelector("h2").textContent = t("incident.report");
      fill("inc-origin",
        facts([[t("incident.category"), o.category], [t("incident.reporter"), o.reporter],
          [t("incident.contact"), o.contact], [t("incident.urgency"), o.urgency ? choiceName(o.urgency) : null],
          [t("incident.occurrences"), fmtNum(d.occurrences)]]),
        h("h3", {}, t("incident.description")),
        h("p", { class: "text" }, o.summary || ""),
        o.text ? h("pre", { class: "text" }, o.text) : null,
        (d.hidden || []).includes("device") ? [h("h3", {}, t("incident.snapshot")), reservedMark()] : null,
        o.snapshot && o.snapshot.length ? [h("h3", {}, t("incident.snapshot")),
          facts(o.snapshot.map((r) => [r.name, fmtNum(r.value, { maximumFractionDigits: 2 }) + " " + (r.unit || "")]))] : null,
        o.open_faults && o.open_faults.length ? [h("h3", {}, t("incident.open_faults")),
          h("ul", {}, o.open_faults.map((f) => h("li", {}, kindName(f.kind) + " · " + f.subject + " · " + severityName(f.severity))))] : null);
    } else {
      const ev = o.evidence || {};
      const num = (v) => (typeof v === "number" ? fmtNum(v, { maximumFractionDigits: 2 }) : v);
      fill("inc-origin",
        h("p", { class: "what" }, kindName(o.kind || d.kind), " · ", h("code", {}, o.subject || d.subject)),
        facts([[t("incident.value"), num(ev.value)], [t("incident.threshold"), num(ev.threshold)],
          [t("incident.unit"), ev.unit], [t("incident.source"), ev.source ? h("code", {}, ev.source) : null],
          [t("incident.message"), o.message],
          [t("incident.occurrences"), fmtNum(d.occurrences)]]),
        h("p", { class: d.fault_active ? "flag" : "flag ok", id: "inc-active" },
          d.fault_active ? t("incident.fault_active") : t("incident.fault_cleared")));
    }

    const c = d.classification;
    fill("inc-facts", facts([
      [t("incident.opened"), fmtDate(d.opened_at)],
      [t("incident.updated"), fmtDate(d.updated_at)],
      [t("incident.closed_at"), d.closure ? fmtDate(d.closure.at) + " · " + tOr("closure." + d.closure.reason, d.closure.reason.replace(/_/g, " ")) : null],
      [t("incident.deadline"), d.next_deadline ? fmtDate(d.next_deadline) : null],
      [t("col.who"), d.assignee || null],
      [t("incident.group"), d.group || (c && c.group) || null],
      [t("incident.category"), c ? c.category : null],
      [t("incident.impact"), c ? choiceName(c.impact) : null],
      [t("field.urgency"), c ? choiceName(c.urgency) : null],
      [t("incident.resources"), c && c.resources && c.resources.length ? c.resources.join(", ") : null],
      [t("incident.path"), c && c.path ? choiceName(c.path) : null],
      [t("incident.rule"), c ? c.rule : null],
      [t("incident.solution"), d.solution || null],
    ]));

    const extra = [];
    extra.push(section(t("reserve.title"), "inc-reserve", reserveFacts(d)));
    const st = d.sla_status;
    if (st) {
      const due = (at, breachedAt) => breachedAt
        ? h("span", { class: "sla breached" }, t("sla.breached_at", { t: fmtDate(breachedAt) }))
        : at ? h("span", { class: at < Date.now() ? "sla breached" : "sla" }, fmtDate(at) + " · " + slaView({ due: at }).text) : null;
      extra.push(section(t("sla.title"), "inc-sla", facts([
        [t("sla.state"), st.paused ? h("span", { class: "sla paused" }, "⏸ " + t("sla.paused")) : t("sla.running")],
        [t("sla.response"), due(st.response_due_at, st.response_breached_at)],
        [t("sla.responded"), st.responded_at ? fmtDate(st.responded_at) : null],
        [t("sla.resolution"), due(st.resolution_due_at, st.resolution_breached_at)],
        [t("sla.escalation"), st.escalation_due_at ? fmtDate(st.escalation_due_at) : null],
        [t("sla.active"), fmtDuration(st.active_ms || 0)],
        [t("sla.paused_for"), st.paused_ms ? fmtDuration(st.paused_ms) : null],
      ])));
    }
    if (d.info_requests && d.info_requests.length) {
      extra.push(section(t("incident.questions"), "inc-questions", h("ul", { class: "plain" }, d.info_requests.map((q) =>
        h("li", {}, h("time", {}, fmtDate(q.asked_at)), " · ", q.question, h("br"),
          h("span", { class: q.answer ? "" : "muted" }, t("incident.answer") + ": " + (q.answer || t("incident.no_answer"))))))));
    }
    if (d.provider_requests && d.provider_requests.length) {
      extra.push(section(t("incident.providers"), "inc-providers", d.provider_requests.map((p) => facts([
        [t("field.provider"), p.provider], [t("field.kind"), choiceName(p.kind)], [t("field.priority"), p.priority],
        [t("field.agreed_at"), fmtDate(p.agreed_at)], [t("field.affects_network"), p.affects_network ? t("field.yes") : t("field.no")],
        [t("field.conditions"), p.conditions],
        [t("prov.respond_by"), p.respond_by ? fmtDate(p.respond_by) : null],
        [t("prov.resolve_by"), p.resolve_by ? fmtDate(p.resolve_by) : null],
        [t("prov.overdue"), (p.overdue || []).length ? p.overdue.map((o) => t("prov.deadline." + o.deadline) + " · " + fmtDate(o.at)).join("; ") : null],
        [t("prov.accepted"), p.accepted ? stampText(p.accepted) : null],
        [t("prov.proposed"), p.proposed ? fmtDate(p.proposed.date) + " · " + stampText(p.proposed.stamp) : null],
        [t("prov.done"), p.done ? stampText(p.done) : null],
        [t("prov.rejections"), (p.rejections || []).length ? p.rejections.map((r) => fmtDate(r.verification.verified_at) + " · " + r.verification.verified_by + ": " + r.verification.note).join("\n") : null],
        [t("field.as_agreed"), p.delivery ? (p.delivery.as_agreed ? t("field.yes") : t("field.no")) + (p.delivery.note ? " · " + p.delivery.note : "") : null],
      ]))));
    }
    const extraBox = $("inc-extra");
    if (extraBox) extraBox.replaceChildren(...extra);

    const notes = d.notes || [];
    fill("inc-notes", notes.length
      ? h("ul", { class: "notes plain" }, notes.map((x) => h("li", {},
        h("div", { class: "muted" }, h("time", {}, fmtDate(x.at)), " · ", x.author), h("pre", { class: "text" }, x.text))))
      : h("p", { class: "muted" }, t("incident.no_notes")));

    const audit = [...(d.audit || [])].reverse();
    fill("inc-audit", h("div", { class: "table-wrap" }, table("audit", [t("audit.at"), t("audit.who"), t("audit.action"), t("audit.states"), t("audit.why"), t("audit.changes")],
      audit.map((a) => h("tr", {},
        td(t("audit.at"), h("time", {}, fmtDate(a.at))),
        td(t("audit.who"), h("span", { class: "actor" }, actorName(a.actor))),
        td(t("audit.action"), actionName(a.action)),
        td(t("audit.states"), a.from === a.to ? stateName(a.to) : stateName(a.from) + " → " + stateName(a.to)),
        td(t("audit.why"), a.why || a.reason || ""),
        td(t("audit.changes"), (a.changes || []).map((c2) => h("div", {}, c2.field + ": " + (c2.from || "—") + " → " + (c2.to || "—")))))))));

    // What was sent about it, to whom and when (staff see it; the server leaves it out
    // for others).
    const sent = (d.notifications || []).flatMap((x) => (x.deliveries || []).map((dl) => ({ x, dl })));
    const notifyBox = $("inc-notify");
    const staff = ["viewer", "technician", "service_desk", "admin"].some(hasRole);
    if (notifyBox) notifyBox.hidden = !staff;
    fill("inc-notify", sent.length
      ? h("div", { class: "table-wrap" }, table("notifications", [t("notify.at"), t("notify.event"), t("notify.to"), t("notify.state")],
        sent.map(({ x, dl }) => h("tr", { "data-state": dl.state },
          td(t("notify.at"), h("time", {}, fmtDate(dl.done_at || x.at))),
          td(t("notify.event"), t("notify.ev." + x.event)),
          td(t("notify.to"), (dl.channel === "webhook" ? t("notify.webhook") + " " : "") + dl.to),
          td(t("notify.state"), t("notify." + dl.state, { at: fmtDate(dl.next_at), n: String(dl.attempts), d: String(dl.digest || "") }) + (dl.error ? " — " + dl.error : ""))))))
      : h("p", { class: "muted" }, t("incident.no_notifications")));
  }

  // The record's information classification: its level now, for how long, why, and what
  // of it the server hid from this account.
  function reserveFacts(d) {
    const r = d.reserve;
    const level = d.information || "public";
    const rows = [[t("reserve.level"), t("reserve.level." + level)]];
    if (r) {
      if (level === "public") rows.push([t("reserve.lapsed"), t("reserve.level." + r.level) + " · " + fmtDate(r.until)]);
      rows.push([t("reserve.until"), fmtDate(r.until) + " (" + t("reserve.years", { n: String(r.years) }) + ")"]);
      if (r.partial) rows.push([t("reserve.fields"), r.fields.map((f) => t("reserve.field." + f)).join(", ")]);
      rows.push([t("reserve.justification"), r.justification]);
      rows.push([t("reserve.by"), r.by + " · " + fmtDate(r.at)]);
    }
    const hidden = d.hidden || [];
    return [facts(rows), hidden.length
      ? h("p", { class: "reserved", role: "note" }, t("reserve.hidden", { f: hidden.map((f) => t("reserve.field." + f)).join(", ") }))
      : null];
  }

  function actorName(a) {
    if (!a) return "";
    if (a.type === "person") return a.name;
    if (a.type === "device") return t("actor.device", { d: a.device });
    return t("actor.system");
  }

  function fillActions(d) {
    const box = $("inc-actions");
    if (!box) return;
    const allowed = d.allowed || [];
    const buttons = h("div", { class: "buttons", id: "action-buttons" }, allowed.map((a) =>
      h("button", { type: "button", class: a.action === "close" || a.action === "resolve" ? "primary" : "", data: { action: a.action }, onclick: () => openAction(a.action) }, actionName(a.action))));
    box.replaceChildren(box.querySelector("h2"),
      allowed.length ? buttons : h("p", { class: "muted", id: "no-actions" }, t("action.none")),
      h("div", { id: "action-form" }));
    S.formOpen = null;
  }

  function openAction(name) {
    const d = S.detail;
    if (!d) return;
    const spec = (d.allowed || []).find((a) => a.action === name);
    if (!spec) return;
    const holder = $("action-form");
    const err = h("p", { class: "error", role: "alert", hidden: true });
    const form = h("form", { class: "action-form", id: "form-" + name, data: { action: name } },
      h("h3", {}, actionName(name)),
      fieldControls(spec.fields, d),
      h("div", { class: "buttons" },
        h("button", { type: "submit", class: "primary", id: "action-submit" }, t("action.submit")),
        h("button", { type: "button", class: "link", onclick: closeAction }, t("action.cancel"))),
      err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!form.reportValidity()) return;
      const submit = form.querySelector("#action-submit");
      submit.disabled = true;
      err.hidden = true;
      try {
        const fresh = await api("POST", "/api/incidents/" + d.number + "/" + name, readFields(form, spec.fields));
        toast(t("action.done", { a: actionName(name) }));
        S.formOpen = null;
        if (fresh && fresh.number === d.number) {
          S.detail = fresh;
          fillIncident(fresh, true);
        } else {
          refreshIncident().then(() => fillActions(S.detail));
        }
      } catch (e) {
        err.textContent = errorText(e);
        err.hidden = false;
        submit.disabled = false;
      }
    });
    for (const b of document.querySelectorAll("#action-buttons button")) b.classList.toggle("on", b.dataset.action === name);
    holder.replaceChildren(form);
    S.formOpen = name;
    const first = form.querySelector("textarea, input, select");
    (first || form.querySelector("#action-submit")).focus();
  }

  function closeAction() {
    S.formOpen = null;
    if (S.detail) fillIncident(S.detail, true);
  }

  async function loadIncidentDevice(id) {
    let dev;
    try {
      dev = await api("GET", "/api/devices/" + encodeURIComponent(id));
    } catch (_) {
      dev = null;
    }
    if (dev || !(S.detail && S.detail.device_info)) showIncidentDevice(id, dev);
  }

  function showIncidentDevice(id, dev) {
    const box = $("inc-device");
    if (!box || !S.detail || S.detail.device !== id) return;
    // A reserve over the device's data hides it here too, though the devices page shows
    // it: beside this incident it would say what the reserve keeps.
    const reserved = (S.detail.hidden || []).includes("device");
    box.replaceChildren(box.querySelector("h2"), deviceBadge(id, dev),
      reserved ? reservedMark() : dev ? inventory(dev, true) : null);
  }

  function deviceBadge(id, dev) {
    const online = dev && dev.online;
    return h("p", { class: "device-badge" },
      h("span", { class: "dot" + (online ? " on" : "") }),
      link(deviceHref(id), id), " · ",
      h("span", { class: online ? "ok" : "bad" }, online ? t("device.online") : t("device.offline")),
      dev && dev.last_seen ? " · " + t("device.last_seen", { t: fmtAgo(dev.last_seen) }) : null);
  }

  // The asset's warranty: with whom, until when, or that it has expired (a device record
  // says whether it is in force beside it, a summary inside it).
  function warrantyText(dev) {
    const w = dev.warranty;
    if (!w) return null;
    const inForce = w.in_force !== undefined ? w.in_force : dev.warranty_in_force;
    return t(inForce ? "device.warranty_until" : "device.warranty_expired", { p: w.provider, d: fmtDate(w.until) });
  }

  // The inventory from a device record (its birth message), or from a summary.
  function inventory(dev, short) {
    const b = dev.birth || {};
    const dmi = b.dmi || {};
    const model = [dmi.vendor, dmi.product].filter(Boolean).join(" ") || dev.model;
    const os = b.os ? (b.os + " " + (b.os_version || "")).trim() : dev.os;
    const pairs = [
      [t("device.hostname"), b.hostname || dev.hostname],
      [t("device.os"), os],
      [t("device.model"), model],
      [t("device.cpu"), (b.cpu_model || dev.cpu_model) ? (b.cpu_model || dev.cpu_model) + (b.cpu_cores ? " × " + fmtNum(b.cpu_cores) : "") : null],
      [t("device.ram"), (b.ram_bytes || dev.ram_bytes) ? fmtBytes(b.ram_bytes || dev.ram_bytes) : null],
      [t("device.tags"), b.tags && b.tags.length ? b.tags.join(", ") : null],
      [t("device.warranty"), warrantyText(dev)],
    ];
    if (!short) {
      pairs.push(
        [t("device.kernel"), b.kernel || dev.kernel],
        [t("device.arch"), b.arch],
        [t("device.serial"), dmi.serial],
        [t("device.bios"), dmi.bios_version],
        [t("device.agent"), b.agent_version || dev.agent_version],
        [t("device.first_seen"), dev.first_seen ? fmtDate(dev.first_seen) : null],
        [t("device.dropped"), dev.dropped && dev.dropped.total ? fmtNum(dev.dropped.total) : dev.dropped_events ? fmtNum(dev.dropped_events) : null]);
    }
    return facts(pairs);
  }

  // ---------------------------------------------------------------- the device page

  async function renderDevice(app, id) {
    app.replaceChildren(
      h("div", { class: "incident-head" }, link("/fleet", "← " + t("fleet.title"), "back"), h("h1", {}, t("device.title", { d: id })), h("div", { id: "dev-badge" })),
      h("div", { class: "incident-grid" },
        h("div", { class: "col-main" },
          section(t("device.faults"), "dev-faults"),
          section(t("device.history"), "dev-history")),
        h("div", { class: "col-side" },
          section(t("device.inventory"), "dev-inventory"),
          h("div", { id: "dev-extra" }))));
    await loadDevice();
  }

  async function loadDevice() {
    if (S.view.name !== "device") return;
    const id = S.view.id;
    let dev;
    let history;
    try {
      [dev, history] = await Promise.all([
        api("GET", "/api/devices/" + encodeURIComponent(id)),
        api("GET", "/api/incidents?" + new URLSearchParams({ device: id, state: "all", limit: String(LIST_LIMIT) })),
      ]);
    } catch (e) {
      if (S.view.name === "device" && S.view.id === id) {
        $("app").replaceChildren(link("/fleet", "← " + t("fleet.title"), "back"),
          h("p", { class: "error", role: "alert" }, e.status === 404 ? t("device.not_found", { d: id }) : errorText(e)));
      }
      return;
    }
    if (S.view.name !== "device" || S.view.id !== id) return;
    const keepTitle = (el, ...kids) => el.replaceChildren(el.querySelector("h2"), ...kids);
    $("dev-badge").replaceChildren(deviceBadge(id, dev));
    keepTitle($("dev-inventory"), inventory(dev, false));
    const b = dev.birth || {};
    const extra = [];
    if (b.disks && b.disks.length) {
      extra.push(section(t("device.disks"), "dev-disks", h("ul", { class: "plain" }, b.disks.map((x) =>
        h("li", {}, h("code", {}, x.name), " · ", [x.model, x.serial].filter(Boolean).join(" · "), x.size_bytes ? " · " + fmtBytes(x.size_bytes) : "")))));
    }
    if (b.nics && b.nics.length) {
      extra.push(section(t("device.nics"), "dev-nics", h("ul", { class: "plain" }, b.nics.map((x) => h("li", {}, h("code", {}, x.name), " · ", x.mac || "")))));
    }
    $("dev-extra").replaceChildren(...extra);
    const active = history.filter((i) => i.origin === "fault" && i.fault_active && i.state !== "closed");
    keepTitle($("dev-faults"), active.length ? incidentTable(active, "dev-faults-table") : h("p", { class: "muted" }, t("device.no_faults")));
    keepTitle($("dev-history"), history.length ? incidentTable(history, "dev-history-table") : h("p", { class: "muted" }, t("list.empty")));
  }

  function incidentTable(list, id) {
    const tbl = table("incidents small", [t("col.number"), t("col.state"), t("col.what"), t("incident.opened"), t("incident.closed_at")],
      list.map((i) => h("tr", {},
        td(t("col.number"), link(incidentHref(i.number), String(i.number))),
        td(t("col.state"), h("span", { class: "state s-" + i.state }, stateName(i.state))),
        td(t("col.what"), link(incidentHref(i.number), i.title), h("div", { class: "muted" }, i.origin === "fault" ? kindName(i.kind) + " · " + i.subject : i.kind)),
        td(t("incident.opened"), fmtDate(i.opened_at)),
        td(t("incident.closed_at"), i.closed_at ? fmtDate(i.closed_at) : "—"))));
    tbl.id = id;
    return h("div", { class: "table-wrap" }, tbl);
  }

  // ---------------------------------------------------------------- the fleet

  function renderFleet(app) {
    app.replaceChildren(
      h("div", { class: "list-head" }, h("h1", {}, t("fleet.title")), h("span", { id: "fleet-count", class: "muted" })),
      section(t("fleet.offline"), "fleet-offline"),
      section(t("fleet.with_incidents"), "fleet-incidents"),
      section(t("fleet.all"), "fleet-all"));
    loadFleet();
  }

  async function loadFleet() {
    if (S.view.name !== "fleet") return;
    let list;
    try {
      list = await api("GET", "/api/devices");
    } catch (e) {
      toast(errorText(e), true);
      return;
    }
    // Older servers do not count open incidents per device: count them here.
    if (list.some((d) => d.open_incidents === undefined)) {
      try {
        const open = await api("GET", "/api/incidents?state=open&limit=1000");
        const by = new Map();
        for (const i of open) by.set(i.device, (by.get(i.device) || 0) + 1);
        for (const d of list) if (d.open_incidents === undefined) d.open_incidents = by.get(d.device) || 0;
      } catch (_) {
        // Without counts the fleet still shows who is offline.
      }
    }
    if (S.view.name !== "fleet") return;
    S.devices = new Map(list.map((d) => [d.device, d]));
    list.sort((a, b) => a.device.localeCompare(b.device));
    const rows = (devs) => devs.map((d) => h("tr", {},
      td(t("col.device"), h("span", { class: "dot" + (d.online ? " on" : "") }), link(deviceHref(d.device), d.device)),
      td(t("device.hostname"), d.hostname || "—"),
      td(t("device.os"), [d.os, d.model].filter(Boolean).join(" · ") || "—"),
      td(t("device.last_seen", { t: "" }).trim(), h("span", { class: d.online ? "ok" : "bad" }, d.online ? t("device.online") : t("device.offline")), " · ", h("time", { title: fmtDate(d.last_seen) }, fmtAgo(d.last_seen))),
      td(t("fleet.open"), d.open_incidents ? link("/?" + new URLSearchParams({ state: "open", device: d.device }), fmtNum(d.open_incidents)) : "0")));
    const headers = [t("col.device"), t("device.hostname"), t("device.os"), t("device.last_seen", { t: "" }).trim(), t("fleet.open")];
    const put = (id, devs, none) => {
      const el = $(id);
      el.replaceChildren(el.querySelector("h2"), devs.length ? h("div", { class: "table-wrap" }, table("devices", headers, rows(devs))) : h("p", { class: "muted" }, none));
    };
    put("fleet-offline", list.filter((d) => !d.online), list.length ? t("fleet.none_offline") : t("fleet.empty"));
    put("fleet-incidents", list.filter((d) => d.open_incidents > 0), t("fleet.none_incidents"));
    put("fleet-all", list, t("fleet.empty"));
    $("fleet-count").textContent = fmtNum(list.filter((d) => d.online).length) + " / " + fmtNum(list.length) + " " + t("device.online");
  }

  // ---------------------------------------------------------------- enrolments

  // Agents that asked to join with their site's token, with what they said about their
  // machine: an administrator approves (the broker account is made and its password sent
  // sealed to that agent) or refuses with a reason; enrolled devices can be revoked.
  function renderEnrolments(app) {
    app.replaceChildren(
      h("div", { class: "list-head" }, h("h1", {}, t("enrol.title")), h("span", { id: "enrol-count", class: "muted" })),
      h("p", { id: "enrol-state", class: "muted" }),
      h("div", { id: "enrol-list" }),
      section(t("enrol.sites"), "enrol-sites", h("div", { id: "enrol-site-list" }), siteTokenForm()));
    loadEnrolments();
  }

  async function loadEnrolments() {
    if (S.view.name !== "enrolments") return;
    let v;
    try {
      v = await api("GET", "/api/enrolments");
    } catch (e) {
      $("enrol-list").replaceChildren(h("p", { class: "error", role: "alert" }, errorText(e)));
      return;
    }
    if (S.view.name !== "enrolments") return;
    const pending = v.requests.filter((r) => r.decision === "pending").length;
    $("enrol-count").textContent = t("enrol.pending_count", { n: fmtNum(pending) });
    $("enrol-state").textContent = v.enabled ? "" : t("enrol.disabled");
    $("enrol-list").replaceChildren(...(v.requests.length
      ? [h("div", { class: "table-wrap" }, table("enrolments", [t("enrol.device"), t("enrol.machine"), t("enrol.site"), t("enrol.asked"), t("enrol.state"), ""],
        v.requests.map(enrolmentRow)))]
      : [h("p", { class: "muted" }, t("enrol.empty"))]));
    $("enrol-site-list").replaceChildren(v.sites.length
      ? h("ul", { class: "plain" }, v.sites.map((x) => h("li", {}, h("strong", {}, x.site), " · ",
        h("span", { class: "muted" }, t("enrol.token_by", { who: x.by, when: fmtDate(x.at) })))))
      : h("p", { class: "muted" }, t("enrol.no_sites")));
  }

  function enrolmentRow(r) {
    const machine = [r.vendor, r.product].filter(Boolean).join(" ");
    const state = r.decision === "refused" && r.reason
      ? t("enrol.decision.refused") + ": " + r.reason
      : t("enrol.decision." + r.decision);
    const actions = [];
    if (r.decision === "pending") {
      actions.push(h("button", { type: "button", class: "approve", onclick: () => enrolAct(r, "approve") }, t("enrol.approve")),
        h("button", { type: "button", class: "link refuse", onclick: () => enrolRefuse(r) }, t("enrol.refuse")));
    } else if (r.decision === "approved") {
      actions.push(h("button", { type: "button", class: "link revoke", onclick: () => enrolRevoke(r) }, t("enrol.revoke")));
    }
    return h("tr", { "data-request": r.request, class: "enrol-" + r.decision },
      td(t("enrol.device"), h("strong", {}, r.device), h("br"), h("span", { class: "muted small" }, r.hostname)),
      td(t("enrol.machine"), machine || "—", r.serial ? h("br") : null, r.serial ? h("span", { class: "muted small" }, t("enrol.serial") + " " + r.serial) : null,
        h("br"), h("span", { class: "muted small" }, [r.os, r.arch].filter(Boolean).join(" · "))),
      td(t("enrol.site"), r.site),
      td(t("enrol.asked"), fmtAgo(r.last_seen), h("br"), h("span", { class: "muted small" }, t("enrol.times", { n: fmtNum(r.asked) }))),
      td(t("enrol.state"), h("span", { class: "decision" }, state),
        r.decided_by ? h("span", { class: "muted small" }, " · " + r.decided_by) : null),
      td("", ...actions));
  }

  async function enrolAct(r, action, body) {
    try {
      await api("POST", "/api/enrolments/" + encodeURIComponent(r.request) + "/" + action, body || {});
      toast(t(action === "approve" ? "enrol.approved" : "enrol.refused", { device: r.device }));
    } catch (e) {
      // A reinstalled agent asks with a new key under the id it had: replacing the old
      // account is the admin's call, asked here.
      if (e.code === "account_exists" && action === "approve" && !(body && body.replace)
          && confirm(t("enrol.replace_confirm", { device: r.device }))) {
        return enrolAct(r, action, { replace: true });
      }
      toast(errorText(e), true);
    }
    loadEnrolments();
  }

  function enrolRefuse(r) {
    const reason = prompt(t("enrol.refuse_reason", { device: r.device }));
    if (reason === null) return;
    enrolAct(r, "refuse", { reason });
  }

  async function enrolRevoke(r) {
    if (!confirm(t("enrol.revoke_confirm", { device: r.device }))) return;
    try {
      await api("POST", "/api/devices/" + encodeURIComponent(r.device) + "/revoke", {});
      toast(t("enrol.revoked", { device: r.device }));
    } catch (e) {
      toast(errorText(e), true);
    }
    loadEnrolments();
  }

  function siteTokenForm() {
    const out = h("p", { id: "enrol-token", class: "token", hidden: true });
    const input = h("input", { name: "site", required: true, pattern: "[a-z0-9][a-z0-9-]{0,31}", autocomplete: "off" });
    const form = h("form", { class: "inline", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const v = await api("POST", "/api/enrolments/sites", { site: input.value });
        out.replaceChildren(t("enrol.token_once"), h("br"), h("code", {}, v.token));
        out.hidden = false;
      } catch (e) {
        toast(errorText(e), true);
      }
      loadEnrolments();
    } },
    h("label", { class: "field" }, h("span", {}, t("enrol.site")), input),
    h("button", { type: "submit" }, t("enrol.make_token")));
    return h("div", {}, form, out);
  }

  // ---------------------------------------------------------------- providers

  // Who the organisation contracts support from: their channels, what they cover, the
  // contract for the period with its response and resolution times, and the minutes of
  // the coordination meetings. Staff read it; administrators register and change it.
  function renderProviders(app) {
    const admin = hasRole("admin");
    // Who works incidents asks for services (the server authorises it again).
    const staff = hasRole("service_desk") || hasRole("technician");
    app.replaceChildren(
      h("div", { class: "list-head" }, h("h1", {}, t("providers.title")), h("span", { id: "prov-count", class: "muted" })),
      staff ? section(t("service.title"), "service-order", serviceForm()) : null,
      h("div", { id: "prov-list" }),
      admin ? section(t("providers.register"), "prov-edit", providerForm()) : null);
    loadProviders();
  }

  // A service asked of a provider with no incident behind it (planned maintenance, work
  // on the network): registered as a record of its own, waiting for the provider.
  const SERVICE_FIELDS = [
    { name: "summary", type: "person", required: true },
    { name: "category", type: "group", required: true },
    { name: "text", type: "text" },
    { name: "device", type: "person" },
  ];
  const SERVICE_REQUEST_FIELDS = [
    { name: "provider", type: "person" },
    { name: "kind", choices: ["scheduled", "unplanned"], required: true },
    { name: "agreed_at", type: "time", required: true },
    // A new record has no priority to keep: left empty, the service is P3.
    { name: "priority", type: "priority", blank: "service.priority_default" },
    { name: "affects_network", type: "bool" },
    { name: "conditions", type: "text" },
  ];

  function serviceForm() {
    const err = h("p", { class: "error", role: "alert", hidden: true });
    const form = h("form", { class: "action-form", id: "service-form" },
      h("p", { class: "muted" }, t("service.hint")),
      fieldControls(SERVICE_FIELDS.map((f) => Object.assign({}, f, { name: "service_" + f.name }))),
      fieldControls(SERVICE_REQUEST_FIELDS),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", id: "service-submit" }, t("service.submit"))),
      err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!form.reportValidity()) return;
      const submit = form.querySelector("#service-submit");
      submit.disabled = true;
      err.hidden = true;
      const order = readFields(form, SERVICE_FIELDS.map((f) => Object.assign({}, f, { name: "service_" + f.name })));
      const service = {};
      for (const [k, v] of Object.entries(order)) service[k.slice("service_".length)] = v;
      const body = Object.assign({ service }, readFields(form, SERVICE_REQUEST_FIELDS));
      try {
        const r = await api("POST", "/api/requests", body);
        toast(t("service.done", { n: r.incident }));
        go(incidentHref(r.incident));
      } catch (e) {
        err.textContent = errorText(e);
        err.hidden = false;
        submit.disabled = false;
      }
    });
    return form;
  }

  async function loadProviders() {
    if (S.view.name !== "providers") return;
    let list;
    try {
      list = await api("GET", "/api/providers");
    } catch (e) {
      $("prov-list").replaceChildren(h("p", { class: "error", role: "alert" }, errorText(e)));
      return;
    }
    if (S.view.name !== "providers") return;
    S.providers = list;
    $("prov-count").textContent = fmtNum(list.length);
    $("prov-list").replaceChildren(...(list.length ? list.map(providerCard) : [h("p", { class: "muted" }, t("providers.empty"))]));
  }

  // A day as the date inputs give it, as the CLI takes it: from the UTC day's first
  // millisecond (a period ends at its last day's last millisecond).
  const dayStart = (v) => Date.parse(v + "T00:00:00Z");
  const dayEnd = (v) => Date.parse(v + "T23:59:59.999Z");
  const dayOf = (ms) => new Date(ms).toISOString().slice(0, 10);
  // Only an http(s) address becomes a link: what was typed never runs.
  const safeUrl = (u) => /^https?:\/\//i.test(u || "") ? h("a", { href: u, rel: "noopener noreferrer", target: "_blank" }, u) : u;

  function contractState(c) {
    const now = Date.now();
    if (now < c.start) return h("span", { class: "muted" }, t("providers.not_yet"));
    if (now > c.end) return h("span", { class: "bad" }, t("providers.expired"));
    return h("span", { class: "ok" }, t("providers.in_force"));
  }

  function providerCard(p) {
    const slug = "prov-" + p.name.toLowerCase().replace(/[^a-z0-9]+/g, "-");
    const c = p.contract;
    const times = c ? PRIORITIES.filter((q) => (c.response || {})[q] || (c.resolution || {})[q]) : [];
    const admin = hasRole("admin");
    return h("section", { class: "card provider", id: slug, data: { provider: p.name } },
      h("h2", {}, p.name),
      facts([
        [t("providers.covers"), (p.covers || []).join(", ")],
        [t("providers.services"), (p.services || []).join(", ")],
        [t("providers.email"), p.email],
        [t("providers.phone"), p.phone],
        [t("providers.portal"), p.portal ? safeUrl(p.portal) : null],
        [t("providers.contacts"), (p.contacts || []).length ? h("ul", { class: "plain" }, p.contacts.map((x) =>
          h("li", {}, [x.name, x.email, x.phone].filter(Boolean).join(" · ")))) : null],
        [t("providers.contract"), c ? h("span", {}, fmtDay(c.start), " – ", fmtDay(c.end), " · ", contractState(c)) : t("providers.no_contract")],
        [t("providers.conditions"), c && c.conditions],
      ]),
      times.length ? h("div", { class: "table-wrap" }, table("contract-times small", [t("field.priority"), t("providers.response"), t("providers.resolution")],
        times.map((q) => h("tr", {}, td(t("field.priority"), q),
          td(t("providers.response"), (c.response || {})[q] || "—"),
          td(t("providers.resolution"), (c.resolution || {})[q] || "—"))))) : null,
      h("h3", {}, t("providers.minutes")),
      (p.minutes || []).length ? h("ul", { class: "plain minutes" }, p.minutes.map((m) => h("li", {},
        h("strong", {}, fmtDay(m.date)), " · ", m.participants.join(", "),
        m.recorded_by ? h("span", { class: "muted" }, " · " + t("providers.recorded_by", { who: m.recorded_by })) : null,
        h("pre", { class: "text" }, m.text)))) : h("p", { class: "muted" }, t("providers.no_minutes")),
      admin ? h("div", { class: "buttons" },
        h("button", { type: "button", class: "edit", onclick: () => editProvider(p) }, t("providers.edit")),
        h("button", { type: "button", class: "add-minutes", onclick: (ev) => openMinutes(p, ev.target.closest("section")) }, t("providers.add_minutes")),
        h("button", { type: "button", class: "link remove", onclick: () => removeProvider(p) }, t("providers.remove"))) : null,
      h("div", { class: "minutes-form" }));
  }

  const PROVIDER_FIELDS = ["name", "email", "phone", "portal"];

  function providerForm() {
    const text = (name, type) => h("label", { class: "field" }, h("span", {}, t("providers." + name)),
      h("input", { type: type || "text", name, id: "pf-" + name, required: name === "name", autocomplete: "off" }));
    const area = (name, hint) => h("label", { class: "field" }, h("span", {}, t("providers." + name), hint ? h("em", { class: "muted" }, " " + hint) : null),
      h("textarea", { name, id: "pf-" + name, rows: 2 }));
    const err = h("p", { class: "error", role: "alert", hidden: true });
    const form = h("form", { class: "action-form", id: "provider-form" },
      PROVIDER_FIELDS.map((f) => text(f, f === "email" ? "email" : f === "portal" ? "url" : "text")),
      area("services", t("providers.one_per_line")),
      area("covers", t("providers.covers_hint")),
      area("contacts", t("providers.contacts_hint")),
      h("fieldset", {}, h("legend", {}, t("providers.contract")),
        text("start", "date"), text("end", "date"), area("conditions"),
        h("div", { class: "table-wrap" }, table("contract-times small", [t("field.priority"), t("providers.response"), t("providers.resolution")],
          PRIORITIES.map((q) => h("tr", {}, td(t("field.priority"), q),
            td(t("providers.response"), h("input", { type: "text", name: "response-" + q, "aria-label": t("providers.response") + " " + q, placeholder: "4h", size: 6 })),
            td(t("providers.resolution"), h("input", { type: "text", name: "resolution-" + q, "aria-label": t("providers.resolution") + " " + q, placeholder: "2d", size: 6 }))))))),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", id: "provider-submit" }, t("providers.save"))),
      err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!form.reportValidity()) return;
      err.hidden = true;
      const v = (n) => form.elements[n].value.trim();
      const lines = (n) => v(n).split(/\n|,/).map((x) => x.trim()).filter(Boolean);
      const body = { name: v("name") };
      for (const f of ["email", "phone", "portal"]) if (v(f)) body[f] = v(f);
      body.services = v("services").split("\n").map((x) => x.trim()).filter(Boolean);
      body.covers = lines("covers");
      body.contacts = v("contacts").split("\n").map((x) => x.trim()).filter(Boolean).map((l) => {
        const [name, email, phone] = l.split(",").map((x) => x.trim());
        const c = { name };
        if (email) c.email = email;
        if (phone) c.phone = phone;
        return c;
      });
      if (v("start") || v("end")) {
        const times = (kind) => Object.fromEntries(PRIORITIES.filter((q) => v(kind + "-" + q)).map((q) => [q, v(kind + "-" + q)]));
        body.contract = { start: v("start") ? dayStart(v("start")) : NaN, end: v("end") ? dayEnd(v("end")) : NaN,
          conditions: v("conditions"), response: times("response"), resolution: times("resolution") };
        if (Number.isNaN(body.contract.start) || Number.isNaN(body.contract.end)) {
          err.textContent = t("providers.need_both_dates");
          err.hidden = false;
          return;
        }
      }
      const submit = form.querySelector("#provider-submit");
      submit.disabled = true;
      try {
        await api("PUT", "/api/providers/" + encodeURIComponent(body.name), body);
        toast(t("providers.saved", { p: body.name }));
        form.reset();
        await loadProviders();
      } catch (e) {
        err.textContent = errorText(e);
        err.hidden = false;
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  function editProvider(p) {
    const form = $("provider-form");
    if (!form) return;
    form.reset();
    for (const f of PROVIDER_FIELDS) form.elements[f].value = p[f] || "";
    form.elements.services.value = (p.services || []).join("\n");
    form.elements.covers.value = (p.covers || []).join(", ");
    form.elements.contacts.value = (p.contacts || []).map((c) => [c.name, c.email || "", c.phone || ""].join(", ").replace(/(, )+$/, "")).join("\n");
    const c = p.contract;
    if (c) {
      form.elements.start.value = dayOf(c.start);
      form.elements.end.value = dayOf(c.end);
      form.elements.conditions.value = c.conditions || "";
      for (const q of PRIORITIES) {
        form.elements["response-" + q].value = (c.response || {})[q] || "";
        form.elements["resolution-" + q].value = (c.resolution || {})[q] || "";
      }
    }
    form.scrollIntoView();
    form.elements.name.focus();
  }

  function openMinutes(p, card) {
    const holder = card.querySelector(".minutes-form");
    const err = h("p", { class: "error", role: "alert", hidden: true });
    const form = h("form", { class: "action-form" },
      h("h3", {}, t("providers.add_minutes")),
      h("label", { class: "field" }, h("span", {}, t("providers.minutes_date")), h("input", { type: "date", name: "date", required: true })),
      h("label", { class: "field" }, h("span", {}, t("providers.participants"), h("em", { class: "muted" }, " " + t("providers.one_per_line"))), h("textarea", { name: "participants", rows: 2, required: true })),
      h("label", { class: "field" }, h("span", {}, t("providers.agreed")), h("textarea", { name: "text", rows: 3, required: true })),
      h("div", { class: "buttons" },
        h("button", { type: "submit", class: "primary minutes-submit" }, t("providers.save")),
        h("button", { type: "button", class: "link", onclick: () => holder.replaceChildren() }, t("action.cancel"))),
      err);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!form.reportValidity()) return;
      const body = {
        date: form.elements.date.value,
        participants: form.elements.participants.value.split(/\n|,/).map((x) => x.trim()).filter(Boolean),
        text: form.elements.text.value.trim(),
      };
      try {
        await api("POST", "/api/providers/" + encodeURIComponent(p.name) + "/minutes", body);
        toast(t("providers.minutes_saved"));
        await loadProviders();
      } catch (e) {
        err.textContent = errorText(e);
        err.hidden = false;
      }
    });
    holder.replaceChildren(form);
    form.elements.date.focus();
  }

  async function removeProvider(p) {
    if (!window.confirm(t("providers.confirm_remove", { p: p.name }))) return;
    try {
      await api("DELETE", "/api/providers/" + encodeURIComponent(p.name));
      toast(t("providers.removed", { p: p.name }));
      await loadProviders();
    } catch (e) {
      toast(errorText(e), true);
    }
  }

  // ---------------------------------------------------------------- keyboard

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const help = $("help");
    if (ev.key === "Escape") {
      if (help.open) help.close();
      else if (S.formOpen) closeAction();
      else if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
      return;
    }
    const el = ev.target;
    if (el && (/^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName) || el.isContentEditable)) return;
    if (!S.session || S.view.name === "login") return;
    const v = S.view.name;
    const act = (name) => {
      ev.preventDefault();
      if (v === "incident") openAction(name);
      else if (v === "list" && S.selected.size && BULK[name]) {
        renderBulk(name);
        const first = $("bulk").querySelector(".bulk-fields textarea, .bulk-fields input, .bulk-fields select");
        if (first) first.focus();
      } else if (v === "list" && S.cursor !== null) {
        S.pendingAction = name;
        go(incidentHref(S.cursor));
      }
    };
    switch (ev.key) {
      case "?": ev.preventDefault(); help.showModal(); break;
      case "/":
        ev.preventDefault();
        if (v !== "list") go("/");
        if ($("f-q")) $("f-q").focus();
        break;
      case "j": if (v === "list") { ev.preventDefault(); moveCursor(1); } break;
      case "k": if (v === "list") { ev.preventDefault(); moveCursor(-1); } break;
      case "x": if (v === "list") { ev.preventDefault(); toggleCursorSelection(); } break;
      case "Enter": if (v === "list" && S.cursor !== null) { ev.preventDefault(); go(incidentHref(S.cursor)); } break;
      case "e": act("escalate"); break;
      case "n": act("note"); break;
      case "a": act("assign"); break;
      case "u": if (v !== "list") { ev.preventDefault(); go("/"); } break;
      case "f": ev.preventDefault(); go("/fleet"); break;
      default: break;
    }
  }

  // ---------------------------------------------------------------- start

  async function start() {
    applyWords();
    document.addEventListener("click", (ev) => {
      const a = ev.target.closest && ev.target.closest("a[data-link]");
      if (!a || ev.defaultPrevented || ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      go(a.getAttribute("href"));
    });
    window.addEventListener("popstate", render);
    document.addEventListener("keydown", onKey);
    $("lang").addEventListener("change", (ev) => changeLanguage(ev.target.value));
    $("tz").addEventListener("change", (ev) => changeZone(ev.target.value));
    $("logout").addEventListener("click", logout);
    // Relative times and SLA countdowns move on by themselves.
    setInterval(() => {
      if (S.view.name === "list") renderRows();
    }, 30000);
    try {
      setSession(await api("GET", "/api/session"));
    } catch (e) {
      // A collector without accounts (older than the console) has no /api/session.
      setSession(e.status === 404 ? ANONYMOUS : null);
    }
    if (S.session) startFeed();
    render();
  }

  start();
})();
