// The live stream: one websocket to /api/v1/live, authenticated by its first message (browsers cannot set
// headers on a websocket, and a token in the URL would land in access logs). Reconnects with backoff.

const listeners = new Set();
let socket = null;
let retryDelay = 500;
let wantedToken = "";

export function onLive(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function showState(connected) {
  const badge = document.getElementById("live-state");
  if (badge) badge.className = `live ${connected ? "on" : "off"}`;
  document.body.dataset.live = connected ? "on" : "off";
}

export function startLive(token) {
  wantedToken = token;
  if (socket) socket.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const current = new WebSocket(`${scheme}://${location.host}/api/v1/live`);
  socket = current;
  current.addEventListener("open", () => current.send(JSON.stringify({ token })));
  current.addEventListener("message", (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "hello") {
      retryDelay = 500;
      showState(true);
    }
    for (const listener of listeners) listener(message);
  });
  current.addEventListener("close", (event) => {
    if (socket !== current) return;
    showState(false);
    socket = null;
    // 4401/4403: the token is not (or no longer) good; reconnecting would only be refused again.
    if (event.code === 4401 || event.code === 4403 || !wantedToken) return;
    setTimeout(() => wantedToken && !socket && startLive(wantedToken), retryDelay);
    retryDelay = Math.min(retryDelay * 2, 15000);
  });
}

export function stopLive() {
  wantedToken = "";
  if (socket) socket.close();
  socket = null;
  showState(false);
}
