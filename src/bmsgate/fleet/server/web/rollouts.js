// Rollouts: the list, and one rollout's progress per group (counts per phase, failures with their reasons),
// reloaded when the live stream says the rollout changed (and every 15 s, in case the stream is down). Action buttons are drawn only for a role that may use them
// (pause / resume / cancel / retry for technicians, rollback for admins); the API refuses the rest anyway.

import { api, roleAllows } from "./api.js";
import { clock, el } from "./format.js";
import { onLive } from "./live.js";

const FALLBACK_REFRESH_MS = 15000;
const LIVE_DEBOUNCE_MS = 150;
const PHASE_ORDER = ["pending", "published", "waiting", "downloading", "verified", "staged", "active-pending",
  "committed", "idle", "failed", "reverted", "timeout"];

function phaseCells(phases) {
  const names = Object.keys(phases).sort((a, b) => PHASE_ORDER.indexOf(a) - PHASE_ORDER.indexOf(b));
  return names.map((name) => el("span", { class: `phase phase-${name}`, dataset: { phase: name },
    text: `${name} ${phases[name]}` }));
}

function actionButtons(rollout, session, refresh) {
  const buttons = [];
  const act = (label, action) => el("button", {
    type: "button", class: `act act-${action}`, text: label,
    onclick: async () => {
      try {
        await api(`/rollouts/${encodeURIComponent(rollout.id)}/${action}`, { method: "POST" });
      } catch (error) {
        alert(`${label}: ${error.detail || error.message}`);
      }
      refresh();
    },
  });
  const active = ["running", "paused", "waiting_approval"].includes(rollout.state);
  if (roleAllows(session.role, "technician")) {
    if (rollout.state === "running" || rollout.state === "waiting_approval") buttons.push(act("Pause", "pause"));
    if (rollout.state === "paused") buttons.push(act("Resume", "resume"));
    if (rollout.state === "waiting_approval") buttons.push(act("Approve next group", "resume"));
    const groupsLeft = rollout.groups.some((group) => group.started_at === null);
    if (rollout.state === "running" && groupsLeft) buttons.push(act("Start next group", "resume"));
    if (active) buttons.push(act("Cancel", "cancel"));
    if (!active && rollout.failed > 0) buttons.push(act("Retry failed", "retry-failed"));
  }
  if (roleAllows(session.role, "admin")) buttons.push(act("Roll back", "rollback"));
  return buttons;
}

function summary(rollout) {
  return `${rollout.succeeded} of ${rollout.total} succeeded, ${rollout.failed} failed`;
}

function groupTable(rollout) {
  const head = el("tr", {}, ...["Group", "Gateways", "Started", "Phases", "Failures"].map((t) => el("th", { text: t })));
  const rows = rollout.groups.map((group) => el("tr", { class: "group-row", dataset: { group: group.index } },
    el("td", { text: String(group.index + 1) }),
    el("td", { class: "group-size", text: String(group.size) }),
    el("td", { text: group.started_at ? clock(group.started_at) : "not yet" }),
    el("td", { class: "group-phases" }, ...phaseCells(group.phases)),
    el("td", { class: "group-reasons", text: Object.entries(group.reasons).map(([r, n]) => `${r} ${n}`).join(", ") || "–" })));
  return el("table", { class: "plain rollout-groups" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

function memberTable(members) {
  const failed = members.filter((member) => member.outcome === "failure");
  if (!failed.length) return el("p", { class: "muted", text: "No failures." });
  const head = el("tr", {}, ...["Gateway", "Group", "Phase", "Reason", "Detail"].map((t) => el("th", { text: t })));
  const rows = failed.map((member) => el("tr", { class: "failure-row" },
    el("td", {}, el("a", { href: `#/site/${encodeURIComponent(member.gateway)}`, text: member.gateway })),
    el("td", { text: String(member.group + 1) }),
    el("td", { text: member.phase }),
    el("td", { class: "failure-reason", text: member.reason || "" }),
    el("td", { text: member.detail || "" })));
  return el("table", { class: "plain rollout-failures" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

async function renderOne(view, context, rolloutId) {
  const holder = el("div", { id: "rollout" });
  view.replaceChildren(holder);
  async function refresh() {
    const rollout = await api(`/rollouts/${encodeURIComponent(rolloutId)}`);
    holder.replaceChildren(
      el("div", { class: "toolbar" },
        el("h2", { text: `${rollout.name || rollout.id} (${rollout.kind})` }),
        el("span", { class: `state rollout-state ${rollout.state}`, text: rollout.state }),
        el("span", { class: "actions" }, ...actionButtons(rollout, context.session, refresh))),
      el("p", { class: "rollout-summary", text: `${summary(rollout)}${rollout.reason ? ` — ${rollout.reason}` : ""}` }),
      groupTable(rollout),
      el("h3", { text: "Failures" }),
      memberTable(rollout.members || []),
      el("p", {}, el("a", { href: "#/rollouts", text: "all rollouts" })));
    document.body.dataset.ready = "rollout";
  }
  await refresh();
  return refresh;
}

async function renderList(view) {
  const holder = el("div", { id: "rollout-list" });
  view.replaceChildren(el("div", { class: "toolbar" }, el("h2", { text: "Rollouts" })), holder);
  async function refresh() {
    const payload = await api("/rollouts");
    const head = el("tr", {}, ...["Rollout", "Kind", "State", "Progress", "Created"].map((t) => el("th", { text: t })));
    const rows = payload.rollouts.map((rollout) => el("tr", { class: "rollout-row", dataset: { rollout: rollout.id } },
      el("td", {}, el("a", { href: `#/rollouts/${encodeURIComponent(rollout.id)}`, text: rollout.name || rollout.id })),
      el("td", { text: rollout.kind }),
      el("td", {}, el("span", { class: `state ${rollout.state}`, text: rollout.state })),
      el("td", { text: summary(rollout) }),
      el("td", { text: `${clock(rollout.created_at)} ${rollout.created_by}` })));
    holder.replaceChildren(payload.rollouts.length
      ? el("table", { class: "plain rollouts" }, el("thead", {}, head), el("tbody", {}, ...rows))
      : el("p", { class: "muted", text: "No rollouts yet (bmsgate fleet rollout create)." }));
    document.body.dataset.ready = "rollouts";
  }
  await refresh();
  return refresh;
}

export async function renderRollouts(view, context, rolloutId = "") {
  const refresh = rolloutId ? await renderOne(view, context, rolloutId) : await renderList(view);
  const reload = () => refresh().catch(() => {});
  let pending = null;
  const unsubscribe = onLive((message) => {
    const relevant = (message.type === "rollout" && (!rolloutId || message.id === rolloutId)) || message.type === "resync";
    if (!relevant) return;
    clearTimeout(pending);
    pending = setTimeout(reload, LIVE_DEBOUNCE_MS);
  });
  const timer = setInterval(reload, FALLBACK_REFRESH_MS);
  return () => {
    unsubscribe();
    clearTimeout(pending);
    clearInterval(timer);
  };
}
