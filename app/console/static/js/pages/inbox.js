// The inbox: unread filter, mark read, mark all read, delete; live while open.
import { clear, debounce, errorText, h, timeEl, toast } from '../dom.js';

export function mount(main, ctx) {
  const list = h('ul', { class: 'list', id: 'inbox', 'aria-live': 'polite' });
  const unreadOnly = h('input', { type: 'checkbox', id: 'unread-only' });
  const markAll = h('button', { type: 'button', id: 'mark-all-read' }, 'Mark all read');
  const more = h('button', { type: 'button', hidden: true }, 'Load more');
  let cursor = null;

  function item(n) {
    const read = h('button', { type: 'button', class: 'small', dataset: { action: 'read' }, hidden: n.read }, 'Mark read');
    read.addEventListener('click', async () => {
      try { await ctx.api.post(`/notifications/${n.id}/read`); reload(); } catch (err) { toast(errorText(err), 'error'); }
    });
    const remove = h('button', { type: 'button', class: 'small danger', dataset: { action: 'delete' } }, 'Delete');
    remove.addEventListener('click', async () => {
      try { await ctx.api.del(`/notifications/${n.id}`); reload(); } catch (err) { toast(errorText(err), 'error'); }
    });
    const link = n.data && n.data.episode_id ? h('a', { href: `#/episodes/${n.data.episode_id}` }, 'Open episode') : null;
    return h('li', { class: `card notification ${n.read ? 'read' : 'unread'} prio-${n.priority}`, dataset: { notificationId: n.id } },
      h('div', { class: 'notification-head' },
        h('strong', {}, n.title), ' ', h('span', { class: `pill priority-${n.priority}` }, n.priority), ' ',
        h('span', { class: 'muted small' }, n.type), ' ', h('small', { class: 'muted' }, timeEl(n.created_at)),
        n.read ? null : h('span', { class: 'sr-only' }, ' (unread)')),
      n.message ? h('p', {}, n.message) : null,
      h('div', { class: 'actions' }, link, read, remove));
  }

  let seq = 0;
  async function load(reset) {
    const mine = ++seq; // an older answer arriving last must not replace a newer one
    try {
      const page = await ctx.api.get('/notifications', { limit: 20, cursor: reset ? null : cursor, unread: unreadOnly.checked ? 'true' : null });
      if (mine !== seq) return;
      if (reset) clear(list);
      page.items.forEach((n) => list.append(item(n)));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!list.children.length) list.append(h('li', { class: 'muted empty' }, unreadOnly.checked ? 'Nothing unread.' : 'No notifications.'));
    } catch (err) { toast(errorText(err), 'error'); }
  }
  const reload = debounce(() => load(true), 150);

  unreadOnly.addEventListener('change', () => load(true));
  more.addEventListener('click', () => load(false));
  markAll.addEventListener('click', async () => {
    try { await ctx.api.post('/notifications/read-all'); reload(); } catch (err) { toast(errorText(err), 'error'); }
  });
  ctx.onCleanup(ctx.rt.on('/feed', 'notification', reload));
  ctx.onCleanup(ctx.rt.on('/feed', 'notification_read', reload));

  clear(main, h('h1', {}, 'Notifications'),
    h('div', { class: 'toolbar' }, h('label', { htmlFor: 'unread-only', class: 'check' }, unreadOnly, ' Unread only'), markAll,
      h('a', { href: '#/preferences' }, 'Preferences')),
    list, more);
  load(true);
  return { refresh: () => load(true) };
}
