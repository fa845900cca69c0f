// One site: every battery with its live values and per-cell voltage bars, history charts (uPlot) of voltage,
// current, SoC and the cell voltages, the inverter limits, the site's alarms and its versions.

import { api, roleAllows } from "./api.js";
import { alarmTable } from "./alarms.js";
import { ageText, ago, clock, el, loadScript, millivolts, num, siteState } from "./format.js";
import { onLive } from "./live.js";

const HISTORY_SECONDS = 24 * 3600;
const CHARTS = [
  { field: "voltage", label: "Voltage", unit: "V" },
  { field: "current", label: "Current", unit: "A" },
  { field: "soc", label: "SoC", unit: "%" },
  { field: "cell_voltages", label: "Cell voltages", unit: "V" },
];
// How often the battery cards re-check their age: a silent gateway sends nothing that would re-render them.
const AGE_CHECK_MS = 2000;
const CELL_COLOURS = ["#3b82c4", "#d64545", "#1f9d55", "#d69e2e", "#7c3aed", "#0f766e", "#be185d", "#475569"];

function cellBars(voltages) {
  if (!voltages || !voltages.length) return el("p", { class: "muted", text: "no cell voltages reported" });
  const low = Math.min(...voltages);
  const high = Math.max(...voltages);
  // Scale from a little below the lowest cell so that a few millivolts of drift are visible.
  const floor = Math.min(low - 0.02, high - 0.1);
  const span = Math.max(high - floor, 0.001);
  const bars = voltages.map((volts, index) => el("div", {
    class: `cell${volts === low ? " min" : ""}${volts === high ? " max" : ""}`,
    style: `height:${Math.max(4, ((volts - floor) / span) * 100)}%`,
    title: `cell ${index + 1}: ${millivolts(volts)}`,
    dataset: { cell: String(index + 1), volts: String(volts) },
  }));
  const labels = voltages.map((_, index) => el("span", { text: String(index + 1) }));
  return el("div", {}, el("div", { class: "cells" }, ...bars), el("div", { class: "cell-labels" }, ...labels));
}

function value(label, text) {
  return el("div", {}, el("small", { text: label }), el("b", { text }));
}

// The API's age is of the moment it answered; the card ages on from there (our clock, not the gateway's).
function currentAge(battery, fetchedAt) {
  if (battery.age_s === null || battery.age_s === undefined) return null;
  return battery.age_s + Math.max(0, Date.now() / 1000 - fetchedAt);
}

function showAge(card, battery, fetchedAt) {
  const age = currentAge(battery, fetchedAt);
  const stale = battery.stale || age === null || age > battery.stale_after_s;
  card.classList.toggle("stale", stale);
  card.querySelector("h3").textContent = `${battery.name || battery.id}${stale ? " (stale)" : ""}`;
  card.querySelector(".updated b").textContent = ageText(age);
}

function batteryCard(gatewayId, battery, fetchedAt) {
  const snapshot = battery.snapshot || {};
  const card = el("section", { class: "card battery", dataset: { battery: battery.id } },
    el("h3", {}),
    el("div", { class: "values" },
      value("SoC", num(snapshot.soc, 0, "%")),
      value("Voltage", num(snapshot.voltage, 2, "V")),
      value("Current", num(snapshot.current, 1, "A")),
      value("Power", num(snapshot.power, 0, "W")),
      value("Cell delta", millivolts(snapshot.cell_delta)),
      value("Temperature", num(snapshot.temperature_mean, 1, "°C")),
      value("Cycles", snapshot.cycles ?? "–"),
      el("div", { class: "updated" }, el("small", { text: "Updated" }), el("b", {}))),
    (snapshot.alarms || []).length
      ? el("p", { class: "error", text: `BMS alarms: ${snapshot.alarms.join(", ")}` }) : null,
    cellBars(snapshot.cell_voltages));
  showAge(card, battery, fetchedAt);
  const charts = el("div", { class: "charts" });
  card.append(charts);
  drawCharts(charts, gatewayId, battery.id);
  return card;
}

async function drawCharts(holder, gatewayId, batteryId) {
  await loadScript("/vendor/uPlot.iife.min.js");
  const until = Date.now() / 1000;
  const since = until - HISTORY_SECONDS;
  const width = Math.max(300, holder.clientWidth || 480);
  for (const chart of CHARTS) {
    const box = el("div", { class: "chart", dataset: { field: chart.field } });
    holder.append(box);
    let payload;
    try {
      const query = `field=${chart.field}&since=${since}&until=${until}&resolution=auto`;
      payload = await api(`/gateways/${encodeURIComponent(gatewayId)}/batteries/${encodeURIComponent(batteryId)}/series?${query}`);
    } catch (error) {
      box.append(el("p", { class: "error", text: `${chart.label}: ${error.detail || error.message}` }));
      continue;
    }
    const times = payload.points.map((point) => point[0]);
    let series;
    let data;
    if (chart.field === "cell_voltages") {
      const cells = Math.max(0, ...payload.points.map((point) => (point[1] || []).length));
      data = [times];
      series = [{}];
      for (let cell = 0; cell < cells; cell += 1) {
        data.push(payload.points.map((point) => (point[1] || [])[cell] ?? null));
        series.push({ label: `cell ${cell + 1}`, stroke: CELL_COLOURS[cell % CELL_COLOURS.length], width: 1 });
      }
    } else {
      data = [times, payload.points.map((point) => point[1])];
      series = [{}, { label: `${chart.label} (${chart.unit})`, stroke: "#3b82c4", width: 1.5 }];
    }
    if (!times.length) {
      box.append(el("p", { class: "muted", text: `${chart.label}: no history yet` }));
      continue;
    }
    box.dataset.points = String(times.length);
    // uPlot is a classic script (a global), loaded above.
    new uPlot({ title: `${chart.label} (${payload.resolution})`, width, height: 160, series,
      legend: { show: chart.field !== "cell_voltages" }, axes: [{}, { size: 55 }] }, data, box);
  }
}

function inverterCard(inverter) {
  if (!inverter) return el("section", { class: "card" }, el("h3", { text: "Inverter" }), el("p", { class: "muted", text: "no inverter output" }));
  const limits = inverter.limits || {};
  return el("section", { class: "card inverter" }, el("h3", { text: "Inverter limits" }),
    el("div", { class: "values" },
      value("State", inverter.state || "–"),
      value("Charge voltage", num(limits.charge_voltage, 2, "V")),
      value("Charge current", num(limits.charge_current, 1, "A")),
      value("Discharge current", num(limits.discharge_current, 1, "A")),
      value("Charge reason", limits.charge_reason || "–"),
      value("Discharge reason", limits.discharge_reason || "–"),
      value("Mode", limits.charge_mode || "–"),
      value("Direction", inverter.direction || "–")));
}

function versionsCard(gateway) {
  const rows = (gateway.packs || []).map((pack) => el("tr", {},
    el("td", { text: pack.kind }), el("td", { text: pack.name }), el("td", { text: pack.version || "–" }),
    el("td", { class: "muted", text: pack.sha256.slice(0, 12), title: pack.sha256 })));
  return el("section", { class: "card versions" }, el("h3", { text: "Versions" }),
    el("p", {}, `Software ${gateway.software_version || "–"}`, gateway.hardware ? ` · ${gateway.hardware}` : ""),
    el("table", { class: "plain" }, el("thead", {}, el("tr", {}, ...["Kind", "Name", "Version", "sha256"].map((title) => el("th", { text: title })))),
      el("tbody", {}, ...rows)));
}

function commandsCard(gateway, session) {
  if (!roleAllows(session.role, "technician")) return null;
  const result = el("span", { class: "muted" });
  const send = (kind) => el("button", { type: "button", class: "act act-command", text: kind.replace("_", " "),
    onclick: async () => {
      try {
        const answer = await api(`/gateways/${encodeURIComponent(gateway.id)}/commands`, { method: "POST", body: { kind } });
        result.textContent = `sent (${answer.id})`;
      } catch (error) {
        result.textContent = `refused: ${error.detail || error.message}`;
      }
    } });
  return el("section", { class: "card commands" }, el("h3", { text: "Commands" }),
    send("refresh_state"), send("rediscover_outputs"), result);
}

export async function renderSite(view, context, gatewayId) {
  let timer = null;
  let shown = [];
  async function refresh() {
    const gateway = await api(`/gateways/${encodeURIComponent(gatewayId)}`);
    const fetchedAt = Date.now() / 1000;
    const state = siteState(gateway);
    const location = gateway.location && gateway.location.lat !== null && gateway.location.lat !== undefined
      ? `${num(gateway.location.lat, 4)}, ${num(gateway.location.lon, 4)}` : "no location";
    const header = el("div", { class: "toolbar site-head" },
      el("h2", { id: "site-title", text: gateway.name || gateway.id }),
      el("span", { class: `state ${state}`, text: state }),
      el("span", { class: "muted", text: `${gateway.id} · ${gateway.site || "no site"} · ${location} · last seen ${ago(gateway.last_seen)} (${clock(gateway.last_seen)})` }),
      roleAllows(context.session.role, "admin") ? el("button", { type: "button", class: "act act-delete-gateway", text: "Delete gateway",
        onclick: async () => {
          if (!confirm(`Delete ${gateway.id} and its history?`)) return;
          await api(`/gateways/${encodeURIComponent(gateway.id)}`, { method: "DELETE" });
          context.navigate("#/");
        } }) : null);
    shown = (gateway.batteries || []).map((battery) => ({ battery, fetchedAt, card: batteryCard(gateway.id, battery, fetchedAt) }));
    const batteries = el("div", { class: "cards" }, ...shown.map((entry) => entry.card));
    const side = el("div", { class: "cards" }, inverterCard(gateway.inverter), versionsCard(gateway), commandsCard(gateway, context.session));
    const alarms = el("section", { class: "card site-alarms" }, el("h3", { text: "Alarms" }),
      gateway.alarms && gateway.alarms.length
        ? alarmTable(gateway.alarms, context.session, { ...context, refresh, showGateway: false })
        : el("p", { class: "muted", text: "No alarms." }));
    view.replaceChildren(header, batteries, el("h3", { text: "Site" }), side, alarms);
    document.body.dataset.ready = "site";
  }
  const unsubscribe = onLive((message) => {
    const concerned = (message.type === "gateway" && message.gateway && message.gateway.id === gatewayId)
      || (message.type === "gateways" && Array.isArray(message.ids) && message.ids.includes(gatewayId))
      || (message.type === "alarm" && message.alarm && message.alarm.gateway === gatewayId);
    if (!concerned) return;
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  });
  await refresh();
  const ageing = setInterval(() => {
    for (const entry of shown) showAge(entry.card, entry.battery, entry.fetchedAt);
  }, AGE_CHECK_MS);
  return () => {
    unsubscribe();
    clearTimeout(timer);
    clearInterval(ageing);
  };
}
