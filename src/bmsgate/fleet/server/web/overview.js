// The fleet overview: one JSON fetch of every site, filtered and sorted in memory, shown in a virtual list
// that creates only the rows in view (so 10,000 sites cost as much to scroll and filter as 30).

import { api } from "./api.js";
import { ago, el, millivolts, num, siteState } from "./format.js";
import { onLive } from "./live.js";

const ROW_HEIGHT = 32;
const OVERSCAN = 8;
const STATE_ORDER = { alarm: 0, offline: 1, online: 2 };

function sortKey(gateway) {
  return [STATE_ORDER[siteState(gateway)], -(gateway.open_alarms || 0), gateway.soc ?? 101];
}

function compareSites(a, b) {
  const left = a._sort;
  const right = b._sort;
  for (let index = 0; index < left.length; index += 1) {
    if (left[index] !== right[index]) return left[index] - right[index];
  }
  return a._label.localeCompare(b._label);
}

function prepare(gateway) {
  gateway._label = gateway.name || gateway.id;
  gateway._sort = sortKey(gateway);
  const packs = (gateway.packs || []).map((pack) => `${pack.name} ${pack.version || ""}`).join(" ");
  gateway._haystack = [gateway.id, gateway.name, gateway.site, (gateway.tags || []).join(" "),
    gateway.software_version, packs].join(" ").toLowerCase();
  return gateway;
}

let prefetched = null;

// Start the one big fetch early (while the session is checked): the overview is the first page most visits see.
export function prefetchOverview(token) {
  prefetched = api("/gateways?summary=true", { token });
  prefetched.catch(() => {});
}

export async function renderOverview(view, { navigate }) {
  const search = el("input", { type: "search", id: "search", placeholder: "search id, name, site, tag, version…",
    "aria-label": "search" });
  const stateFilter = el("select", { id: "state-filter", "aria-label": "state" },
    el("option", { value: "", text: "every state" }),
    el("option", { value: "alarm", text: "with alarms" }),
    el("option", { value: "offline", text: "offline" }),
    el("option", { value: "online", text: "online, no alarm" }));
  const count = el("span", { id: "site-count", class: "muted" });
  const head = el("div", { class: "grid-head" }, ...["Site", "Id", "State", "SoC", "Cell delta", "Last seen",
    "Software", "Packs"].map((title) => el("span", { text: title })));
  const spacer = el("div", { class: "grid-spacer" });
  const body = el("div", { class: "grid-body", id: "sites", role: "list" }, spacer);
  view.replaceChildren(el("div", { class: "toolbar" }, search, stateFilter, count), head, body);

  const started = performance.now();
  const request = prefetched || api("/gateways?summary=true");
  prefetched = null;
  const payload = await request;
  const byId = new Map(payload.gateways.map((gateway) => [gateway.id, prepare(gateway)]));
  let all = [...byId.values()].sort(compareSites);
  let shown = all;
  let painted = "";

  function filter() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const wanted = stateFilter.value;
    shown = all.filter((gateway) => (!wanted || siteState(gateway) === wanted)
      && words.every((word) => gateway._haystack.includes(word)));
    count.textContent = `${shown.length} of ${all.length} sites`;
    spacer.style.height = `${shown.length * ROW_HEIGHT}px`;
    painted = "";
    draw();
  }

  function row(gateway, index) {
    const state = siteState(gateway);
    // Installed packs (signed bundles) by name; a gateway without any runs the built-in definitions.
    const files = gateway.packs || [];
    const installed = files.filter((pack) => pack.kind === "pack");
    const packs = installed.length ? installed.map((pack) => `${pack.name} ${pack.version || ""}`.trim())
      : files.length ? [`built-in (${files.length} definitions)`] : [];
    return el("div", { class: "grid-row", role: "listitem", style: `top:${index * ROW_HEIGHT}px`,
      dataset: { gateway: gateway.id }, onclick: () => navigate(`#/site/${encodeURIComponent(gateway.id)}`) },
    el("span", { class: "site-name", text: gateway._label, title: gateway.site || "" }),
    el("span", { class: "muted", text: gateway.id }),
    el("span", {}, el("span", { class: `state ${state}`,
      text: state === "alarm" ? `${gateway.open_alarms} alarm${gateway.open_alarms > 1 ? "s" : ""}` : state })),
    el("span", { text: num(gateway.soc, 0, "%") }),
    el("span", { text: millivolts(gateway.cell_delta) }),
    el("span", { text: ago(gateway.last_seen) }),
    el("span", { text: gateway.software_version || "–" }),
    el("span", { class: "muted", text: packs.join(", ") || "–", title: packs.join("\n") }));
  }

  function draw() {
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(shown.length, Math.ceil((body.scrollTop + body.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    const key = `${first}:${last}`;
    if (key === painted) return;
    painted = key;
    const rows = [];
    for (let index = first; index < last; index += 1) rows.push(row(shown[index], index));
    body.replaceChildren(spacer, ...rows);
  }

  let pending = false;
  function redrawSoon() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      all = [...byId.values()].sort(compareSites);
      filter();
    });
  }

  search.addEventListener("input", filter);
  stateFilter.addEventListener("change", filter);
  body.addEventListener("scroll", draw, { passive: true });
  window.addEventListener("resize", draw);
  const unsubscribe = onLive((message) => {
    if (message.type === "gateway" && message.gateway) {
      byId.set(message.gateway.id, prepare(message.gateway));
      redrawSoon();
    } else if (message.type === "gateway_deleted") {
      byId.delete(message.id);
      redrawSoon();
    }
  });
  // "Last seen" is relative: redraw the visible rows now and then so it does not freeze.
  const ticker = setInterval(() => {
    painted = "";
    draw();
  }, 30_000);
  filter();
  document.body.dataset.overviewMs = String(Math.round(performance.now() - started));
  document.body.dataset.readyAt = String(Math.round(performance.now()));
  document.body.dataset.ready = "overview";
  return () => {
    unsubscribe();
    clearInterval(ticker);
    window.removeEventListener("resize", draw);
  };
}
