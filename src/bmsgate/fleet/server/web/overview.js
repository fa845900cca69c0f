// The fleet overview at any size: the server searches, filters, sorts and pages (GET /api/v1/overview);
// this page asks only for the pages in view and keeps them in a virtual list that creates only the rows
// shown. 50,000 sites cost the browser what 100 do. Live updates re-ask for the pages in view, at most
// every REFRESH_MS (the order may have changed: a new alarm goes to the top).

import { api } from "./api.js";
import { ago, el, millivolts, num, siteState } from "./format.js";
import { onLive } from "./live.js";

const ROW_HEIGHT = 32;
const OVERSCAN = 8;
const PAGE = 100;
const SMALL_FLEET = 5000;
const REFRESH_MS = { small: 300, large: 2000 };
const COLUMNS = [
  ["Site", "name"], ["Id", "id"], ["State", "state"], ["SoC", "soc"], ["Cell delta", "cell_delta"],
  ["Last seen", "last_seen"], ["Software", "software"], ["Packs", null],
];

function pagePath({ words, state, sort, descending }, index) {
  const query = new URLSearchParams({ offset: String(index * PAGE), limit: String(PAGE) });
  if (words) query.set("q", words);
  if (state) query.set("state", state);
  if (sort !== "state") query.set("sort", sort);
  if (descending) query.set("descending", "true");
  return `/overview?${query}`;
}

const DEFAULT_QUERY = { words: "", state: "", sort: "state", descending: false };
let prefetched = null;

// Start the first page's fetch early (while the session is checked): the overview is the first page most
// visits see.
export function prefetchOverview(token) {
  prefetched = api(pagePath(DEFAULT_QUERY, 0), { token });
  prefetched.catch(() => {});
}

function countsText(counts) {
  const versions = Object.entries(counts.versions).slice(0, 4).map(([version, n]) => `${version}: ${n}`);
  const more = Object.keys(counts.versions).length > 4 ? " …" : "";
  return `${counts.online} online · ${counts.offline} offline · ${counts.with_alarms} with alarms `
    + `(${counts.open_alarms} open) · software ${versions.join(", ")}${more}`;
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
  const summary = el("div", { id: "fleet-counts", class: "muted counts" });
  const headers = COLUMNS.map(([title, key]) => el("span", {
    text: title, class: key ? "sortable" : "", dataset: key ? { sort: key } : {},
    onclick: key ? () => sortBy(key) : undefined,
  }));
  const head = el("div", { class: "grid-head" }, ...headers);
  const spacer = el("div", { class: "grid-spacer" });
  const body = el("div", { class: "grid-body", id: "sites", role: "list" }, spacer);
  view.replaceChildren(el("div", { class: "toolbar" }, search, stateFilter, count), summary, head, body);

  const query = { ...DEFAULT_QUERY };
  let generation = 0;
  let pages = new Map(); // page index -> gateways, for the current query
  const loading = new Map(); // page index -> generation it was asked for
  let matched = 0;
  let total = 0;
  let painted = "";

  function failed(error) {
    count.textContent = `could not load the sites: ${error.detail || error.message}`;
  }

  function show(payload) {
    matched = payload.matched;
    total = payload.counts.total;
    count.textContent = `${matched} of ${total} sites`;
    summary.textContent = countsText(payload.counts);
    spacer.style.height = `${matched * ROW_HEIGHT}px`;
  }

  async function load(index, wanted = generation) {
    if (loading.get(index) === wanted) return;
    loading.set(index, wanted);
    try {
      const payload = await api(pagePath(query, index));
      if (wanted !== generation) return; // an answer to an older search
      pages.set(index, payload.gateways);
      show(payload);
      painted = "";
      draw();
      // Which query's rows are on screen (the benchmark times a search by it).
      document.body.dataset.drawn = String(wanted);
    } finally {
      if (loading.get(index) === wanted) loading.delete(index);
    }
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
    el("span", { class: "site-name", text: gateway.name || gateway.id, title: gateway.site || "" }),
    el("span", { class: "muted", text: gateway.id }),
    el("span", {}, el("span", { class: `state ${state}`,
      text: state === "alarm" ? `${gateway.open_alarms} alarm${gateway.open_alarms > 1 ? "s" : ""}` : state })),
    el("span", { text: num(gateway.soc, 0, "%") }),
    el("span", { text: millivolts(gateway.cell_delta) }),
    el("span", { text: ago(gateway.last_seen) }),
    el("span", { text: gateway.software_version || "–" }),
    el("span", { class: "muted", text: packs.join(", ") || "–", title: packs.join("\n") }));
  }

  function visibleRange() {
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(matched, Math.ceil((body.scrollTop + body.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    return [first, last];
  }

  function draw() {
    const [first, last] = visibleRange();
    const key = `${first}:${last}`;
    if (key === painted) return;
    painted = key;
    const rows = [];
    for (let index = first; index < last; index += 1) {
      const page = pages.get(Math.floor(index / PAGE));
      const gateway = page && page[index % PAGE];
      if (gateway) rows.push(row(gateway, index));
      else load(Math.floor(index / PAGE)).catch(failed);
    }
    body.replaceChildren(spacer, ...rows);
  }

  // A new query: the old pages mean nothing any more; the first answer replaces the list.
  async function restart() {
    generation += 1;
    pages = new Map();
    painted = "";
    body.scrollTop = 0;
    for (const header of headers) {
      header.classList.toggle("sorted", header.dataset.sort === query.sort);
      header.classList.toggle("descending", header.dataset.sort === query.sort && query.descending);
    }
    await load(0);
  }

  function sortBy(key) {
    query.descending = query.sort === key ? !query.descending : false;
    query.sort = key;
    restart().catch(failed);
  }

  // The same query again (live updates): the pages in view are re-asked and swapped in when they arrive.
  let refreshTimer = null;
  let refreshing = false;
  function refreshSoon() {
    if (refreshTimer || refreshing) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      refreshing = true;
      const wanted = generation;
      try {
        const [first, last] = visibleRange();
        const indexes = new Set([Math.floor(first / PAGE), Math.floor(Math.max(first, last - 1) / PAGE)]);
        const answers = await Promise.all([...indexes].map(async (index) => [index, await api(pagePath(query, index))]));
        if (wanted !== generation) return;
        pages = new Map();
        for (const [index, payload] of answers) {
          pages.set(index, payload.gateways);
          show(payload);
        }
        painted = "";
        draw();
      } catch {
        // A failed refresh leaves the rows as they were; the next update tries again.
      } finally {
        refreshing = false;
      }
    }, total > SMALL_FLEET ? REFRESH_MS.large : REFRESH_MS.small);
  }

  search.addEventListener("input", () => {
    query.words = search.value.trim();
    restart().catch(failed);
  });
  stateFilter.addEventListener("change", () => {
    query.state = stateFilter.value;
    restart().catch(failed);
  });
  body.addEventListener("scroll", draw, { passive: true });
  window.addEventListener("resize", draw);
  const unsubscribe = onLive((message) => {
    if (message.type === "gateway" || message.type === "gateways" || message.type === "gateway_deleted" || message.type === "resync") refreshSoon();
  });
  // "Last seen" is relative: redraw the visible rows now and then so it does not freeze.
  const ticker = setInterval(() => {
    painted = "";
    draw();
  }, 30_000);

  const started = performance.now();
  const first = prefetched || api(pagePath(query, 0));
  prefetched = null;
  generation += 1;
  const payload = await first;
  pages.set(0, payload.gateways);
  show(payload);
  draw();
  document.body.dataset.overviewMs = String(Math.round(performance.now() - started));
  document.body.dataset.readyAt = String(Math.round(performance.now()));
  document.body.dataset.ready = "overview";
  return () => {
    unsubscribe();
    clearInterval(ticker);
    clearTimeout(refreshTimer);
    generation += 1;
    window.removeEventListener("resize", draw);
  };
}
