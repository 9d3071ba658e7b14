// Who is online (live via presence_changed) and setting my own status and message.
import { avatar, clear, errorText, field, h, STATUS_LABELS, timeEl, toast } from '../dom.js';

export function mount(main, ctx) {
  const people = new Map();
  const list = h('ul', { class: 'list people', id: 'people' });
  const status = h('select', { name: 'status', id: 'status-select' },
    Object.entries(STATUS_LABELS).map(([v, l]) => h('option', { value: v }, l)));
  const message = h('input', { type: 'text', name: 'message', maxLength: 200, placeholder: 'In the edit suite' });
  const form = h('form', { class: 'card inline-form', id: 'status-form' }, h('h2', {}, 'My status'),
    h('div', { class: 'row' }, field('Status', status), field('Message', message)),
    h('button', { type: 'submit', class: 'primary' }, 'Set status'));

  let touched = false;
  form.addEventListener('input', () => { touched = true; });

  function draw() {
    clear(list, [...people.values()].filter((p) => p.status !== 'offline').sort((a, b) => a.name.localeCompare(b.name)).map((p) =>
      h('li', { class: 'person', dataset: { userId: p.user_id } }, avatar(p.name, p.status), ' ', h('strong', {}, p.name), ' ',
        h('span', { class: `pill presence-${p.status}` }, STATUS_LABELS[p.status] || p.status),
        p.message ? h('span', { class: 'muted' }, ` “${p.message}”`) : null,
        p.last_activity_at ? h('small', { class: 'muted' }, ' · active ', timeEl(p.last_activity_at)) : null)));
    if (!list.children.length) list.append(h('li', { class: 'muted' }, 'Nobody online.'));
  }
  async function load() {
    try {
      const [online, me] = await Promise.all([ctx.api.get('/presence/online'), ctx.api.get('/presence/me')]);
      people.clear();
      online.items.forEach((p) => people.set(p.user_id, p));
      draw();
      // A refetch (on connect) must not undo what the person is choosing right now.
      if (!touched) {
        status.value = me.status;
        message.value = me.message || '';
      }
      form.dataset.loaded = 'true';
    } catch (err) { toast(errorText(err), 'error'); }
  }
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const p = await ctx.api.put('/presence/me', { status: status.value, message: message.value || null });
      people.set(p.user_id, p);
      draw();
      touched = false;
      toast('Status set');
    } catch (err) { toast(errorText(err), 'error'); }
  });
  ctx.onCleanup(ctx.rt.on('/feed', 'presence_changed', (env) => {
    const p = env.data || {};
    if (p.user_id) { people.set(p.user_id, { ...(people.get(p.user_id) || {}), ...p }); draw(); }
  }));
  ctx.onCleanup(ctx.rt.onConnected('/feed', load));
  clear(main, h('h1', {}, 'People'), form, h('section', { class: 'card' }, h('h2', {}, 'Online now'), list));
  load();
  return { refresh: load };
}
