// Episodes, newest first; new ones appear live (episode_created on /episodes).
import { clear, errorText, field, h, timeEl, toast } from '../dom.js';

function row(ep) {
  return h('li', { class: 'card episode-item', dataset: { episodeId: ep.id } },
    h('a', { href: `#/episodes/${ep.id}`, class: 'episode-title' }, ep.title),
    h('span', { class: 'muted' }, ` S${ep.season ?? '–'} · E${ep.episode_number} · `),
    h('span', { class: `pill status-${ep.status}` }, ep.status), ' ',
    (ep.categories || []).map((c) => h('span', { class: 'tag' }, c)), ' ',
    h('small', { class: 'muted' }, timeEl(ep.created_at)));
}

export function mount(main, ctx) {
  const list = h('ul', { class: 'list', id: 'episode-list', 'aria-live': 'polite' });
  const more = h('button', { type: 'button', hidden: true }, 'Load more');
  let cursor = null;
  const shown = new Set();

  let seq = 0;
  async function load(reset) {
    const mine = ++seq; // an older answer arriving last must not replace a newer one
    try {
      const page = await ctx.api.get('/episodes', { limit: 20, cursor: reset ? null : cursor });
      if (mine !== seq) return;
      if (reset) { clear(list); shown.clear(); }
      for (const ep of page.items) {
        if (shown.has(ep.id)) continue;
        shown.add(ep.id);
        list.append(row(ep));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!shown.size) list.append(h('li', { class: 'muted empty' }, 'No episodes yet.'));
    } catch (err) { toast(errorText(err), 'error'); }
  }
  more.addEventListener('click', () => load(false));

  ctx.onCleanup(ctx.rt.on('/episodes', 'episode_created', (env) => {
    const d = env.data || {};
    const id = d.episode_id;
    if (!id || shown.has(id)) return;
    ctx.api.get(`/episodes/${id}`).then((ep) => {
      if (shown.has(ep.id)) return;
      shown.add(ep.id);
      list.querySelector('.empty')?.remove();
      const item = row(ep);
      item.classList.add('fresh');
      list.prepend(item);
    }).catch(() => {});
  }));
  ctx.onCleanup(ctx.rt.on('/episodes', 'episode_deleted', (env) => {
    const id = (env.data || {}).episode_id;
    list.querySelector(`[data-episode-id="${id}"]`)?.remove();
    shown.delete(id);
  }));

  const children = [h('h1', {}, 'Episodes')];
  if (ctx.can('editor')) children.push(createForm(ctx));
  children.push(list, more);
  clear(main, ...children);
  load(true);
  return { refresh: () => load(true) };
}

function createForm(ctx) {
  const title = h('input', { type: 'text', name: 'title', required: true, maxLength: 200 });
  const number = h('input', { type: 'number', name: 'episode_number', required: true, min: 1, value: 1 });
  const season = h('input', { type: 'number', name: 'season', min: 1 });
  const categories = h('input', { type: 'text', name: 'categories', placeholder: 'drama, pilot' });
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'card inline-form', id: 'episode-create' },
    h('h2', {}, 'New episode'),
    h('div', { class: 'row' }, field('Title', title), field('Episode number', number), field('Season', season),
      field('Categories', categories, 'Comma separated')),
    error, h('button', { type: 'submit', class: 'primary' }, 'Create episode'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const body = {
      title: title.value.trim(), episode_number: Number(number.value),
      categories: categories.value.split(',').map((c) => c.trim()).filter(Boolean),
    };
    if (season.value) body.season = Number(season.value);
    try {
      const ep = await ctx.api.post('/episodes', body);
      toast(`Created “${ep.title}”`);
      form.reset();
      ctx.navigate(`#/episodes/${ep.id}`);
    } catch (err) { error.textContent = errorText(err); }
  });
  return form;
}
