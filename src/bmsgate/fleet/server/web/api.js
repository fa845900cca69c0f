// Talking to the fleet API: the bearer token (kept in sessionStorage, or localStorage when the user asks to
// stay signed in) and JSON requests that turn HTTP errors into thrown ApiError with the server's detail.

const TOKEN_KEY = "bmsgate.token";
const ROLE_RANK = { viewer: 0, technician: 1, admin: 2 };

export class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || "";
}

export function storeToken(token, remember) {
  forgetToken();
  (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
}

export function roleAllows(role, needed) {
  return (ROLE_RANK[role] ?? -1) >= ROLE_RANK[needed];
}

export async function api(path, { method = "GET", body, token = storedToken() } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const detail = (payload && (payload.detail || payload.error)) || response.statusText;
    throw new ApiError(response.status, detail, response.headers.get("Retry-After"));
  }
  return payload;
}
