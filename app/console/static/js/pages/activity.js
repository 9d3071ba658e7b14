// Activity: my own actions, or (admins) the team feed; full-text search over activity.
import { clear, errorText, field, h, timeEl, toast } from '../dom.js';

export function activityItem(a) {
  const link = a.resource_type && a.resource_id
    ? h('a', { href: `#/timeline/${a.resource_type}/${a.resource_id}` }, 'timeline') : null;
  return h('li', { class: 'activity' },
    h('span', {}, a.description || `${a.user ? a.user.name : 'System'} ${a.action} ${a.resource_type} ${a.resource_name || ''}`),
    ' ', h('small', { class: 'muted' }, timeEl(a.created_at)), link ? [' · ', link] : null);
}

export function mount(main, ctx) {
  const admin = ctx.can('admin');
  const list = h('ul', { class: 'list', id: 'activity' });
  const more = h('button', { type: 'button', hidden: true }, 'Load more');
  const q = h('input', { type: 'search', name: 'q', placeholder: 'e.g. export pilot' });
  const scope = h('select', { id: 'activity-scope' }, h('option', { value: 'me' }, 'My activity'),
    admin ? h('option', { value: 'team', selected: true }, 'Team activity') : null);
  const search = h('form', { class: 'inline-form', id: 'search-form', role: 'search' }, field('Search activity', q),
    h('button', { type: 'submit' }, 'Search'));
  let cursor = null;
  let mode = 'feed';

  let seq = 0;
  async function load(reset) {
    const mine = ++seq; // a feed answer arriving after the search's must not replace it
    try {
      const path = mode === 'search' ? '/activity/search' : (scope.value === 'team' ? '/activity' : '/activity/me');
      const page = await ctx.api.get(path, { limit: 30, cursor: reset ? null : cursor, q: mode === 'search' ? q.value : null });
      if (mine !== seq) return;
      if (reset) clear(list);
      page.items.forEach((a) => list.append(activityItem(a)));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!list.children.length) list.append(h('li', { class: 'muted' }, mode === 'search' ? 'No matches.' : 'No activity yet.'));
    } catch (err) { toast(errorText(err), 'error'); }
  }
  search.addEventListener('submit', (event) => {
    event.preventDefault();
    mode = q.value.trim() ? 'search' : 'feed';
    load(true);
  });
  scope.addEventListener('change', () => { mode = 'feed'; q.value = ''; load(true); });
  more.addEventListener('click', () => load(false));
  clear(main, h('h1', {}, 'Activity'), h('div', { class: 'toolbar' }, field('Show', scope), search), list, more);
  load(true);
  return { refresh: () => load(true) };
}
