// A resource's history, oldest first, with each change's before and after.
import { clear, errorText, h, timeEl } from '../dom.js';

function show(value) {
  if (value === null || value === undefined) return '—';
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

export function mount(main, ctx) {
  const [type, id] = ctx.params;
  const list = h('ol', { class: 'timeline', id: 'timeline' });
  const more = h('button', { type: 'button', hidden: true }, 'Load more');
  let cursor = null;
  async function load(reset) {
    try {
      const page = await ctx.api.get(`/activity/${type}/${id}/timeline`, { limit: 50, cursor: reset ? null : cursor });
      if (reset) clear(list);
      for (const a of page.items) {
        const changes = a.changes ? h('table', { class: 'changes' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Field'), h('th', { scope: 'col' }, 'Before'), h('th', { scope: 'col' }, 'After'))),
          h('tbody', {}, Object.entries(a.changes).map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k),
            h('td', { class: 'before' }, show(v.before)), h('td', { class: 'after' }, show(v.after)))))) : null;
        list.append(h('li', { class: 'card' }, h('strong', {}, a.action), ' ', a.description || '', ' ',
          h('small', { class: 'muted' }, timeEl(a.created_at)), changes));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!list.children.length) list.append(h('li', { class: 'muted' }, 'No history.'));
    } catch (err) { clear(list, h('li', { class: 'error' }, errorText(err))); }
  }
  more.addEventListener('click', () => load(false));
  const back = type === 'episode' ? h('a', { href: `#/episodes/${id}` }, '← Episode') : h('a', { href: '#/activity' }, '← Activity');
  clear(main, h('p', {}, back), h('h1', {}, `Timeline of ${type} #${id}`), list, more);
  load(true);
  return { refresh: () => load(true) };
}
