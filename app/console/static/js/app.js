// The console's shell: sign-in state, the top bar (navigation, notification bell, my
// status), the offline banner, and a hash router that mounts one page at a time.
import * as api from './api.js';
import { rt } from './realtime.js';
import { clear, debounce, h, STATUS_LABELS, toast } from './dom.js';
import * as authPages from './pages/auth.js';
import * as episodesPage from './pages/episodes.js';
import * as episodePage from './pages/episode.js';
import * as inboxPage from './pages/inbox.js';
import * as prefsPage from './pages/preferences.js';
import * as activityPage from './pages/activity.js';
import * as timelinePage from './pages/timeline.js';
import * as peoplePage from './pages/people.js';
import * as adminPage from './pages/admin.js';

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
const offline = document.getElementById('offline');

const routes = [
  [/^#\/login$/, authPages.login, { public: true }],
  [/^#\/register$/, authPages.register, { public: true }],
  [/^#\/episodes$/, episodesPage],
  [/^#\/episodes\/(\d+)$/, episodePage],
  [/^#\/notifications$/, inboxPage],
  [/^#\/preferences$/, prefsPage],
  [/^#\/activity$/, activityPage],
  [/^#\/timeline\/(\w+)\/(\d+)$/, timelinePage],
  [/^#\/people$/, peoplePage],
  [/^#\/admin$/, adminPage, { admin: true }],
];

const state = { user: null, cleanup: null, page: null, unread: { count: 0, capped: false } };

export const ctx = {
  api, rt,
  get user() { return state.user; },
  navigate(hash) { if (window.location.hash === hash) render(); else window.location.hash = hash; },
  can(role) {
    const rank = { viewer: 0, editor: 1, admin: 2 };
    return state.user && rank[state.user.role] >= rank[role];
  },
};

// ---- bell ------------------------------------------------------------------------------

const bell = h('a', { href: '#/notifications', class: 'bell', id: 'bell', 'aria-label': 'Notifications' },
  bellIcon(), ' ', h('span', { class: 'badge', id: 'bell-count' }, '0'));

function bellIcon() {
  // Inline SVG: an emoji bell depends on the system's fonts.
  const ns = 'http://www.w3.org/2000/svg';
  const icon = document.createElementNS(ns, 'svg');
  icon.setAttribute('viewBox', '0 0 24 24');
  icon.setAttribute('aria-hidden', 'true');
  icon.setAttribute('class', 'bell-icon');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', 'M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2z');
  path.setAttribute('fill', 'currentColor');
  icon.append(path);
  return icon;
}

function showUnread(count, capped) {
  state.unread = { count, capped };
  const el = document.getElementById('bell-count');
  const text = capped ? `${count}+` : String(count);
  el.textContent = text;
  el.dataset.count = String(count);
  el.hidden = count === 0;
  bell.setAttribute('aria-label', `Notifications, ${text} unread`);
  document.title = count ? `(${text}) Episode Control` : 'Episode Control';
}

const refetchUnread = debounce(async () => {
  if (!state.user) return;
  try {
    const data = await api.get('/notifications/unread-count');
    showUnread(data.count, data.capped);
  } catch { /* shown next time */ }
}, 150);

rt.on('/feed', 'notification', (env) => {
  const n = env.data || {};
  showUnread(state.unread.count + 1, state.unread.capped);
  toast(`${n.title || 'Notification'}${n.message ? ': ' + n.message : ''}`);
  refetchUnread();
});
rt.on('/feed', 'notification_read', (env) => {
  const d = env.data || {};
  if (typeof d.unread_count === 'number') showUnread(d.unread_count, Boolean(d.unread_capped));
  refetchUnread();
});

// ---- my status ---------------------------------------------------------------------------

const statusSelect = h('select', { id: 'my-status', 'aria-label': 'My status' },
  Object.entries(STATUS_LABELS).map(([value, label]) => h('option', { value }, label)));
statusSelect.addEventListener('change', async () => {
  try {
    await api.put('/presence/me', { status: statusSelect.value });
    toast(`Status: ${STATUS_LABELS[statusSelect.value]}`);
  } catch (err) { toast(err.message, 'error'); }
});
rt.on('/feed', 'presence_changed', (env) => {
  const p = env.data || {};
  if (state.user && p.user_id === state.user.id && p.status) statusSelect.value = p.status;
});

async function loadMyStatus() {
  try {
    const me = await api.get('/presence/me');
    statusSelect.value = me.status === 'offline' ? 'online' : me.status;
  } catch { /* keep */ }
}

// ---- shell -----------------------------------------------------------------------------

function drawTopbar() {
  if (!state.user) { topbar.hidden = true; clear(topbar); return; }
  const links = [
    ['#/episodes', 'Episodes'], ['#/activity', 'Activity'], ['#/people', 'People'],
    ['#/preferences', 'Preferences'],
  ];
  if (state.user.role === 'admin') links.push(['#/admin', 'Admin']);
  const signOut = h('button', { type: 'button', class: 'link-button', id: 'sign-out' }, 'Sign out');
  signOut.addEventListener('click', async () => { await api.logout(); });
  clear(topbar,
    h('a', { href: '#/episodes', class: 'brand' }, 'Episode Control'),
    h('nav', { 'aria-label': 'Main' }, h('ul', {}, links.map(([href, text]) =>
      h('li', {}, h('a', { href, dataset: { nav: href } }, text))))),
    h('div', { class: 'topbar-right' }, bell, statusSelect,
      h('span', { class: 'me', id: 'me', title: state.user.email }, `${state.user.name} · ${state.user.role}`),
      signOut, h('a', { href: '/api/docs', class: 'muted small' }, 'API docs')));
  topbar.hidden = false;
  highlightNav();
}

function highlightNav() {
  topbar.querySelectorAll('[data-nav]').forEach((a) => {
    if (window.location.hash.startsWith(a.dataset.nav)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
}

let offlineTimer = null;
function updateOffline() {
  const down = Boolean(state.user) && (!navigator.onLine || !rt.connected('/feed'));
  clearTimeout(offlineTimer);
  if (!down) { offline.hidden = true; document.body.dataset.online = 'true'; return; }
  document.body.dataset.online = 'false';
  // A moment's grace, so a page load or a quick reconnect does not flash the banner.
  offlineTimer = setTimeout(() => { offline.hidden = false; }, 800);
}
rt.onState(updateOffline);
window.addEventListener('online', updateOffline);
window.addEventListener('offline', updateOffline);

rt.onResync(() => {
  refetchUnread();
  if (state.page && state.page.refresh) state.page.refresh();
});

function startSession() {
  drawTopbar();
  const namespaces = ['/feed', '/episodes', '/jobs'];
  if (state.user.role === 'admin') namespaces.push('/admin');
  rt.start(namespaces);
  refetchUnread();
  loadMyStatus();
  render();
}

function endSession() {
  state.user = null;
  rt.stop();
  drawTopbar();
  updateOffline();
  if (!window.location.hash.match(/^#\/(login|register)$/)) window.location.hash = '#/login';
  else render();
}

api.onSessionChange((s) => {
  if (!s && state.user) endSession();
  else if (s && !state.user) boot();
});

// ---- router ----------------------------------------------------------------------------

function render() {
  if (state.cleanup) { try { state.cleanup(); } catch (e) { console.error(e); } }
  state.cleanup = null;
  state.page = null;
  const hash = window.location.hash || '#/episodes';
  for (const [pattern, page, opts = {}] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    if (!opts.public && !state.user) { window.location.hash = '#/login'; return; }
    if (opts.public && state.user) { window.location.hash = '#/episodes'; return; }
    if (opts.admin && state.user.role !== 'admin') {
      clear(main, h('h1', {}, 'Admins only'), h('p', {}, 'This page needs the admin role.'));
      return;
    }
    clear(main);
    const disposers = [];
    const pageCtx = { ...ctx, params: match.slice(1), onCleanup: (fn) => disposers.push(fn) };
    const handle = page.mount(main, pageCtx) || {};
    state.page = handle;
    state.cleanup = () => disposers.forEach((fn) => fn());
    highlightNav();
    return;
  }
  window.location.hash = state.user ? '#/episodes' : '#/login';
}

window.addEventListener('hashchange', () => {
  render();
  main.focus({ preventScroll: true });
});

async function boot() {
  const s = api.session();
  if (!s) { endSession(); return; }
  try {
    const me = await api.get('/auth/me');
    state.user = me; // before saving: the session listener must not boot a second time
    api.saveSession({ ...api.session(), user: me });
    startSession();
  } catch {
    api.saveSession(null);
    endSession();
  }
}

boot();
