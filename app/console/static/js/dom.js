// Tiny DOM helpers: elements are built with properties and text nodes, never from HTML
// strings, so user data cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key in el && !key.includes('-') && key !== 'list' && key !== 'form') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || '?').slice(0, 2);
  return letters.toUpperCase();
}

export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  if (seconds < 45) return 'just now';
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return date.toLocaleString();
}

export function timeEl(iso) {
  return h('time', { dateTime: iso || '', title: iso ? new Date(iso).toLocaleString() : '' }, when(iso));
}

export function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

let toastSeq = 0;
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const id = `toast-${++toastSeq}`;
  const el = h('div', { class: `toast toast-${kind}`, id }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

// A labelled form field: <label for=id>text</label><input id=id ...>.
let fieldSeq = 0;
export function field(label, control, hint) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  return h('div', { class: 'field' }, h('label', { htmlFor: id }, label), control,
    hint ? h('small', { class: 'muted' }, hint) : null);
}

export function errorText(err) {
  if (!err) return 'Something went wrong';
  const details = err.details && Object.keys(err.details).length
    ? ' (' + Object.entries(err.details).map(([k, v]) => `${k}: ${[].concat(v).join(' ')}`).join('; ') + ')'
    : '';
  return (err.message || String(err)) + details;
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

export const STATUS_LABELS = {
  online: 'Online', away: 'Away', busy: 'Busy', do_not_disturb: 'Do not disturb', offline: 'Offline',
};

export function avatar(name, status) {
  const label = `${name}${status ? ` (${STATUS_LABELS[status] || status})` : ''}`;
  return h('span', { class: `avatar status-${status || 'unknown'}`, title: label, 'aria-label': label, role: 'img' },
    initials(name));
}
