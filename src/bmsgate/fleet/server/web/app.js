// The dashboard shell: sign-in (token checked against /api/v1/session, then kept in the browser), the hash
// router between overview, map, site, alarms and rollouts pages, the live stream and the open-alarm badge.

import { api, ApiError, forgetToken, storedToken, storeToken } from "./api.js";
import { renderAlarms } from "./alarms.js";
import { el } from "./format.js";
import { onLive, startLive, stopLive } from "./live.js";
import { renderMap } from "./map.js";
import { prefetchOverview, renderOverview } from "./overview.js";
import { renderRollouts } from "./rollouts.js";
import { renderSite } from "./site.js";

const view = document.getElementById("view");
const login = document.getElementById("login");
let session = null;
let leave = null;

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// The open-alarm count comes from the fleet counts (never a list of every alarm). The counts follow the live
// stream's coalesced gateway updates, so after an alarm message the badge asks again once those went out.
const BADGE_SETTLE_MS = 600;
const BADGE_EVERY_MS = 30_000;
let badgeTimer = null;

function badgeSoon() {
  clearTimeout(badgeTimer);
  badgeTimer = setTimeout(badge, BADGE_SETTLE_MS);
}

async function badge() {
  try {
    const counts = await api("/overview/counts");
    const node = document.getElementById("alarm-badge");
    node.textContent = String(counts.open_alarms);
    node.hidden = counts.open_alarms === 0;
  } catch {
    // The badge is a convenience: a failed count must not break the page.
  }
}

async function route() {
  if (!session) return;
  if (leave) leave();
  leave = null;
  document.body.dataset.ready = "";
  const [, page = "", argument = ""] = location.hash.split("/");
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (page || "overview"));
  }
  const context = { navigate, session };
  try {
    if (page === "map") leave = await renderMap(view, context);
    else if (page === "alarms") leave = await renderAlarms(view, context);
    else if (page === "rollouts") leave = await renderRollouts(view, context, decodeURIComponent(argument));
    else if (page === "site" && argument) leave = await renderSite(view, context, decodeURIComponent(argument));
    else leave = await renderOverview(view, context);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut("Your token is no longer valid.");
      return;
    }
    view.replaceChildren(el("div", { class: "fatal", role: "alert" },
      el("h2", { text: "Could not load this page" }), el("p", { text: error.detail || error.message })));
  }
}

function signOut(reason = "") {
  forgetToken();
  stopLive();
  session = null;
  if (leave) leave();
  leave = null;
  view.replaceChildren();
  login.hidden = false;
  document.getElementById("logout").hidden = true;
  document.getElementById("whoami").textContent = "";
  document.getElementById("login-error").textContent = reason;
}

async function signIn(token) {
  const [, page = ""] = location.hash.split("/");
  if (!page) prefetchOverview(token);
  session = await api("/session", { token });
  session.token = token;
  login.hidden = true;
  document.getElementById("whoami").textContent = `${session.label || session.token_id} (${session.role})`;
  document.body.dataset.role = session.role;
  document.getElementById("logout").hidden = false;
  startLive(token);
  await route();
  badge();
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("login-token").value.trim();
  // Stored first: every request the pages make while signing in reads it from there.
  storeToken(token, document.getElementById("login-remember").checked);
  try {
    await signIn(token);
    document.getElementById("login-token").value = "";
  } catch (error) {
    forgetToken();
    session = null;
    document.getElementById("login-error").textContent = error.status === 401
      ? "This token is not valid." : `Sign-in failed: ${error.detail || error.message}`;
  }
});
document.getElementById("logout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
onLive((message) => {
  if (message.type === "alarm") badgeSoon();
});
setInterval(() => session && badge(), BADGE_EVERY_MS);

const token = storedToken();
if (token) {
  signIn(token).catch((error) => signOut(error.status === 401 ? "Your token is no longer valid." : error.message));
} else {
  signOut();
}
