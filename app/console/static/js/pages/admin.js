// Admin: users and roles, live connection stats, sending a notification, and a dashboard
// (activity per day, events per minute, delivery lag) drawn as inline SVG.
import { clear, errorText, field, h, timeEl, toast } from '../dom.js';
import { barChart, lineChart } from '../charts.js';

const TYPES = ['admin:alert', 'user:mention', 'approval:needed', 'job:created', 'job:progress', 'job:completed', 'job:failed',
  'episode:created', 'episode:updated', 'episode:deleted', 'episode:published', 'file:ready'];

export function mount(main, ctx) {
  const users = h('tbody', { id: 'users' });
  const stats = h('div', { id: 'realtime-stats', class: 'stats' });
  const charts = h('div', { id: 'dashboard', class: 'charts' });

  async function loadUsers() {
    try {
      const page = await ctx.api.get('/users', { limit: 100 });
      clear(users, page.items.map((u) => {
        const role = h('select', { 'aria-label': `Role of ${u.name}`, dataset: { userId: u.id } },
          ['viewer', 'editor', 'admin'].map((r) => h('option', { value: r, selected: r === u.role }, r)));
        role.addEventListener('change', async () => {
          try { await ctx.api.patch(`/users/${u.id}`, { role: role.value }); toast(`${u.name} is now ${role.value}`); } catch (err) { toast(errorText(err), 'error'); loadUsers(); }
        });
        return h('tr', {}, h('td', {}, u.name), h('td', {}, u.email), h('td', {}, role), h('td', {}, u.is_active ? 'active' : 'inactive'),
          h('td', {}, timeEl(u.created_at)));
      }));
    } catch (err) { toast(errorText(err), 'error'); }
  }

  async function loadStats() {
    try {
      const s = await ctx.api.get('/realtime/stats');
      const ns = s.connections_by_namespace || {};
      clear(stats,
        tile('Users online', s.users_online), tile('Connections', s.connections),
        Object.entries(ns).map(([k, v]) => tile(k, v)),
        tile('This process: clients', s.this_process ? s.this_process.clients : '–'),
        h('p', { class: 'muted small' }, 'Refreshed every 5 s and on every connect or disconnect seen on /admin.'));
    } catch (err) { clear(stats, h('p', { class: 'error' }, errorText(err))); }
  }

  async function loadDashboard() {
    try {
      const [dash, pipeline] = await Promise.all([
        ctx.api.get('/activity/dashboard', { days: 14 }),
        ctx.api.get('/events/stats', { minutes: 60 }).catch(() => null),
      ]);
      const parts = [h('figure', {}, barChart('Activity per day', everyDay(dash.by_day, dash.days)),
        h('figcaption', {}, `Activity per day (last ${dash.days} days, ${dash.total} actions)`))];
      if (pipeline) {
        parts.push(h('figure', {}, barChart('Events per minute', pipeline.per_minute.map((m) => ({ label: m.minute.slice(11, 16), value: m.events }))),
          h('figcaption', {}, `Events per minute (last ${pipeline.minutes} min; ${pipeline.undelivered} waiting in the outbox)`)));
        parts.push(h('figure', {}, lineChart('Delivery lag (ms)', pipeline.per_minute.filter((m) => m.lag_avg_ms !== null)
          .map((m) => ({ label: m.minute.slice(11, 16), value: m.lag_avg_ms })), { unit: ' ms' }),
        h('figcaption', {}, 'Delivery lag: commit → delivered, average per minute (ms)')));
      }
      parts.push(h('figure', {}, barChart('Actions by type', Object.entries(dash.by_action).map(([k, v]) => ({ label: k, value: v }))),
        h('figcaption', {}, 'Actions by kind: ' + Object.entries(dash.by_action).map(([k, v]) => `${k} ${v}`).join(', '))));
      clear(charts, parts);
    } catch (err) { clear(charts, h('p', { class: 'error' }, errorText(err))); }
  }

  function sendForm() {
    const audience = h('select', { name: 'audience' }, h('option', { value: 'all' }, 'Everyone'),
      ['viewer', 'editor', 'admin'].map((r) => h('option', { value: `role:${r}` }, `Role: ${r}`)), h('option', { value: 'ids' }, 'User ids'));
    const ids = h('input', { type: 'text', name: 'user_ids', placeholder: '1, 2' });
    const type = h('select', { name: 'type' }, TYPES.map((t) => h('option', { value: t }, t)));
    const priority = h('select', { name: 'priority' }, ['normal', 'high', 'critical', 'low'].map((p) => h('option', { value: p }, p)));
    const title = h('input', { type: 'text', name: 'title', required: true, maxLength: 200 });
    const message = h('textarea', { name: 'message', rows: 2 });
    const out = h('p', { role: 'status', class: 'muted' });
    const form = h('form', { class: 'card', id: 'send-form' }, h('h2', {}, 'Send a notification'),
      h('div', { class: 'row' }, field('To', audience), field('User ids', ids, 'With "User ids"'), field('Type', type), field('Priority', priority)),
      field('Title', title), field('Message', message), h('button', { type: 'submit', class: 'primary' }, 'Send'), out);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = { type: type.value, priority: priority.value, title: title.value, message: message.value };
      if (audience.value === 'all') body.all = true;
      else if (audience.value === 'ids') body.user_ids = ids.value.split(',').map((s) => Number(s.trim())).filter(Boolean);
      else body.role = audience.value.slice(5);
      try {
        const r = await ctx.api.post('/notifications', body);
        out.textContent = `Queued for ${r.recipients} recipient(s).`;
      } catch (err) { out.textContent = errorText(err); }
    });
    return form;
  }

  const timer = setInterval(loadStats, 5000);
  ctx.onCleanup(() => clearInterval(timer));
  let pending = null;
  const soon = () => { clearTimeout(pending); pending = setTimeout(loadStats, 300); };
  ctx.onCleanup(ctx.rt.on('/admin', 'presence_changed', soon));
  ctx.onCleanup(ctx.rt.on('/admin', 'viewer_joined', soon));
  ctx.onCleanup(ctx.rt.on('/admin', 'viewer_left', soon));

  clear(main, h('h1', {}, 'Admin'),
    h('section', { class: 'card' }, h('h2', {}, 'Live connections'), stats),
    h('section', { class: 'card' }, h('h2', {}, 'Dashboard'), charts),
    sendForm(),
    h('section', { class: 'card' }, h('h2', {}, 'Users and roles'),
      h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, h('tr', {}, ['Name', 'Email', 'Role', 'State', 'Joined'].map((t) => h('th', { scope: 'col' }, t)))), users))));
  loadUsers();
  loadStats();
  loadDashboard();
  return { refresh: () => { loadUsers(); loadStats(); loadDashboard(); } };
}

function tile(label, value) {
  return h('div', { class: 'tile' }, h('span', { class: 'tile-value' }, String(value ?? 0)), h('span', { class: 'tile-label' }, label));
}

// The API lists only days with activity: the chart shows every day of the window.
function everyDay(byDay, days) {
  const counts = new Map(byDay.map((d) => [d.date, d.count]));
  const out = [];
  for (let i = days - 1; i >= 0; i -= 1) {
    const day = new Date(Date.now() - i * 86400000).toISOString().slice(0, 10);
    out.push({ label: day, value: counts.get(day) || 0 });
  }
  return out;
}
