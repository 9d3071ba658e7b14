// The REST client: bearer tokens in localStorage (shared by the tabs of one browser), a
// refresh on 401 serialized across tabs with the Web Locks API (with refresh-token rotation,
// two tabs spending one refresh token at once would look like token theft), and the new
// refresh_token taken whenever POST /auth/refresh returns one.

export const API = '/api/v1';
const KEY = 'ec.auth';
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || 'http_error';
    this.details = error.details || {};
  }
}

export function session() {
  try { return JSON.parse(localStorage.getItem(KEY) || 'null'); } catch { return null; }
}

export function saveSession(value) {
  if (value) localStorage.setItem(KEY, JSON.stringify(value));
  else localStorage.removeItem(KEY);
  listeners.forEach((fn) => fn(session()));
}

export function onSessionChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// Another tab signed in, out, or refreshed the tokens.
window.addEventListener('storage', (event) => {
  if (event.key === KEY) listeners.forEach((fn) => fn(session()));
});

let inFlight = null;

// A fresh access token, unless another tab already replaced the one that failed.
export function refreshTokens(failedAccessToken) {
  if (inFlight) return inFlight;
  const run = async () => {
    const current = session();
    if (!current || !current.refresh_token) throw new ApiError(401, { error: { code: 'signed_out', message: 'Signed out' } });
    if (failedAccessToken && current.access_token !== failedAccessToken) return current;
    const response = await fetch(`${API}/auth/refresh`, {
      method: 'POST', headers: { Authorization: `Bearer ${current.refresh_token}` },
    });
    const body = await response.json().catch(() => null);
    if (response.status === 401 || response.status === 422) {
      saveSession(null);
      throw new ApiError(401, body);
    }
    if (!response.ok) throw new ApiError(response.status, body);
    const next = { ...current, access_token: body.access_token, refresh_token: body.refresh_token || current.refresh_token };
    saveSession(next);
    return next;
  };
  const locked = navigator.locks ? navigator.locks.request('ec-token-refresh', run) : run();
  inFlight = locked.finally(() => { inFlight = null; });
  return inFlight;
}

// Seconds until the access token expires (its own "exp" claim; not verified here, the
// server does that), or -Infinity when there is none.
export function tokenSecondsLeft(token) {
  try {
    const payload = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return payload.exp - Date.now() / 1000;
  } catch { return -Infinity; }
}

// A token good for at least a few more seconds: refreshed first when it is about to expire.
export async function freshAccessToken() {
  const current = session();
  if (!current) return null;
  if (tokenSecondsLeft(current.access_token) > 5) return current.access_token;
  try {
    return (await refreshTokens(current.access_token)).access_token;
  } catch { return (session() || {}).access_token || null; }
}

function url(path, query) {
  const u = new URL(API + path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, v);
  }
  return u.pathname + u.search;
}

export async function request(method, path, { body, query, auth = true } = {}) {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const token = auth ? (session() || {}).access_token : null;
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(url(path, query), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401 && auth && attempt === 0 && token) {
      await refreshTokens(token);
      continue;
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      if (response.status === 401 && auth) saveSession(null);
      throw new ApiError(response.status, data);
    }
    return data;
  }
  throw new ApiError(401, null);
}

export const get = (path, query) => request('GET', path, { query });
export const post = (path, body) => request('POST', path, { body });
export const patch = (path, body) => request('PATCH', path, { body });
export const put = (path, body) => request('PUT', path, { body });
export const del = (path) => request('DELETE', path);

export async function login(email, password) {
  const data = await request('POST', '/auth/login', { body: { email, password }, auth: false });
  saveSession({ access_token: data.access_token, refresh_token: data.refresh_token, user: data.user });
  return data.user;
}

export async function logout() {
  const current = session();
  if (current) {
    try {
      await request('POST', '/auth/logout', { body: { refresh_token: current.refresh_token } });
    } catch { /* the tokens expire anyway */ }
  }
  saveSession(null);
}

// Multipart upload through XMLHttpRequest, the one browser API that reports upload progress.
export function upload(path, file, onProgress) {
  const send = (token) => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', API + path);
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(Math.round((event.loaded / event.total) * 100));
    });
    xhr.addEventListener('load', () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, { error: { message: 'Network error' } })));
    const form = new FormData();
    form.append('file', file);
    xhr.send(form);
  });
  const token = (session() || {}).access_token;
  return send(token).catch(async (err) => {
    if (err.status !== 401) throw err;
    const next = await refreshTokens(token);
    return send(next.access_token);
  });
}
