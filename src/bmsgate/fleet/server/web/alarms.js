// Alarms: a table with acknowledge / close buttons for technicians and delete for admins (the buttons are not
// even drawn for a role that may not use them; the API refuses such a request anyway).

import { api, roleAllows } from "./api.js";
import { clock, el } from "./format.js";
import { onLive } from "./live.js";

const PAGE = 200;
const MAX_LIMIT = 10_000; // the API's own bound

function actions(alarm, session, refresh) {
  const buttons = [];
  const act = (label, action, method = "POST") => el("button", {
    type: "button", class: `act act-${action}`, text: label,
    onclick: async (event) => {
      event.stopPropagation();
      try {
        await api(action === "delete" ? `/alarms/${alarm.id}` : `/alarms/${alarm.id}/${action}`, { method });
      } catch (error) {
        alert(`${label}: ${error.detail || error.message}`);
      }
      refresh();
    },
  });
  if (roleAllows(session.role, "technician")) {
    if (alarm.state === "open") buttons.push(act("Acknowledge", "ack"));
    if (alarm.state !== "closed") buttons.push(act("Close", "close"));
  }
  if (roleAllows(session.role, "admin")) buttons.push(act("Delete", "delete", "DELETE"));
  return buttons;
}

export function alarmTable(alarms, session, { navigate, refresh, showGateway = true }) {
  const head = el("tr", {}, ...["State", ...(showGateway ? ["Site"] : []), "Battery", "Alarm", "Detail", "Opened",
    "Acknowledged", "Closed", ""].map((title) => el("th", { text: title })));
  const rows = alarms.map((alarm) => el("tr", { class: "alarm-row", dataset: { alarm: alarm.id, state: alarm.state } },
    el("td", {}, el("span", { class: `state ${alarm.state}`, text: alarm.state })),
    showGateway ? el("td", {}, el("a", { href: `#/site/${encodeURIComponent(alarm.gateway)}`, text: alarm.gateway })) : null,
    el("td", { text: alarm.battery || "–" }),
    el("td", { class: "alarm-kind", text: alarm.kind }),
    el("td", { text: alarm.message || "" }),
    el("td", { text: clock(alarm.opened_at) }),
    el("td", { text: alarm.acknowledged_at ? `${clock(alarm.acknowledged_at)} ${alarm.acknowledged_by || ""}` : "–" }),
    el("td", { text: clock(alarm.closed_at) }),
    el("td", {}, ...actions(alarm, session, refresh))));
  return el("table", { class: "plain alarms" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

export async function renderAlarms(view, context) {
  const which = el("select", { id: "alarm-filter", "aria-label": "which alarms" },
    el("option", { value: "active", text: "open and acknowledged" }),
    el("option", { value: "open", text: "open" }),
    el("option", { value: "closed", text: "closed" }),
    el("option", { value: "", text: "all" }));
  const holder = el("div", { id: "alarm-list" });
  const more = el("button", { type: "button", id: "alarm-more", text: `Show ${PAGE} more`, hidden: true });
  const shownCount = el("span", { id: "alarm-count", class: "muted" });
  view.replaceChildren(el("div", { class: "toolbar" }, el("h2", { text: "Alarms" }), which, shownCount), holder, more);

  // The newest PAGE alarms first, more on request: a fleet with thousands of alarms is never loaded whole.
  let limit = PAGE;
  let timer = null;
  async function refresh() {
    const query = new URLSearchParams({ limit: String(limit) });
    if (which.value) query.set("state", which.value);
    else query.set("state", "all");
    const payload = await api(`/alarms?${query}`);
    holder.replaceChildren(payload.alarms.length
      ? alarmTable(payload.alarms, context.session, { ...context, refresh })
      : el("p", { class: "muted", text: "No alarms." }));
    const full = payload.alarms.length >= limit && limit < MAX_LIMIT;
    more.hidden = !full;
    shownCount.textContent = full ? `the newest ${payload.alarms.length}` : `${payload.alarms.length}`;
    document.body.dataset.ready = "alarms";
  }
  which.addEventListener("change", () => {
    limit = PAGE;
    refresh();
  });
  more.addEventListener("click", () => {
    limit = Math.min(limit + PAGE, MAX_LIMIT);
    refresh();
  });
  const unsubscribe = onLive((message) => {
    if (message.type !== "alarm") return;
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
  });
  await refresh();
  return () => {
    unsubscribe();
    clearTimeout(timer);
  };
}
