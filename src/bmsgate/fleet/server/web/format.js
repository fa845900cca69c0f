// Display helpers: numbers rounded for people, times relative to now, and a tiny element builder that only
// ever sets text (data from gateways is never parsed as HTML).

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function num(value, digits = 1, unit = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return `${Number(value).toFixed(digits)}${unit ? " " + unit : ""}`;
}

export function millivolts(volts) {
  return volts === null || volts === undefined ? "–" : `${Math.round(volts * 1000)} mV`;
}

// A clock a few seconds apart is normal; beyond that a time "in the future" is said so, never "0 s ago".
const CLOCK_TOLERANCE_S = 5;

function duration(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

export function ageText(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "never";
  return `${duration(Math.max(0, seconds))} ago`;
}

export function ago(unixSeconds) {
  if (!unixSeconds) return "never";
  const seconds = Date.now() / 1000 - unixSeconds;
  if (seconds < -CLOCK_TOLERANCE_S) return `${duration(-seconds)} in the future (clock ahead)`;
  return ageText(seconds);
}

export function clock(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleString() : "–";
}

export function siteState(gateway) {
  if (gateway.open_alarms > 0) return "alarm";
  return gateway.online ? "online" : "offline";
}

export const STATE_COLOURS = { alarm: "#d64545", offline: "#8a8f98", online: "#1f9d55" };

const scripts = new Map();

// A classic (non-module) library script, loaded once, on first use.
export function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve();
      script.onerror = () => {
        scripts.delete(src);
        reject(new Error(`could not load ${src}`));
      };
      document.head.append(script);
    }));
  }
  return scripts.get(src);
}
