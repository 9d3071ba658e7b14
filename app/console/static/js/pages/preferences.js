// Notification preferences: muted types, channels per type, quiet hours in a time zone,
// digest frequency. Saved with PUT and shown again from the server's answer.
import { clear, errorText, field, h, toast } from '../dom.js';

const TYPES = ['job:created', 'job:progress', 'job:completed', 'job:failed', 'episode:created', 'episode:updated',
  'episode:deleted', 'episode:published', 'admin:alert', 'user:mention', 'file:ready', 'approval:needed'];
const CHANNELS = ['in_app', 'email'];

function zones(current) {
  let list = [];
  try { list = Intl.supportedValuesOf('timeZone'); } catch { list = []; }
  if (!list.includes('UTC')) list = ['UTC', ...list];
  if (current && !list.includes(current)) list = [current, ...list];
  return list;
}

export function mount(main, ctx) {
  const form = h('form', { id: 'preferences-form', class: 'card' });
  const status = h('p', { role: 'status', id: 'preferences-status', class: 'muted' });

  function draw(prefs) {
    const table = h('table', { class: 'prefs' },
      h('caption', {}, 'Types and channels'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Type'), h('th', { scope: 'col' }, 'Muted'),
        CHANNELS.map((c) => h('th', { scope: 'col' }, c === 'in_app' ? 'In app' : 'Email')))),
      h('tbody', {}, TYPES.map((type) => h('tr', {},
        h('th', { scope: 'row' }, type),
        h('td', {}, h('input', { type: 'checkbox', name: 'muted', value: type, checked: prefs.muted_types.includes(type), 'aria-label': `Mute ${type}` })),
        CHANNELS.map((c) => h('td', {}, h('input', {
          type: 'checkbox', name: `channel:${type}`, value: c, checked: (prefs.channels[type] || []).includes(c),
          'aria-label': `${type} by ${c === 'in_app' ? 'in app' : 'email'}`,
        })))))));
    const quiet = prefs.quiet_hours || {};
    const quietOn = h('input', { type: 'checkbox', name: 'quiet_on', id: 'quiet-on', checked: Boolean(prefs.quiet_hours) });
    const start = h('input', { type: 'time', name: 'quiet_start', id: 'quiet-start', value: quiet.start || '22:00' });
    const end = h('input', { type: 'time', name: 'quiet_end', id: 'quiet-end', value: quiet.end || '07:00' });
    const tz = h('select', { name: 'timezone', id: 'timezone' }, zones(prefs.timezone).map((z) => h('option', { value: z, selected: z === prefs.timezone }, z)));
    const digest = h('select', { name: 'digest_frequency', id: 'digest' },
      ['none', 'hourly', 'daily', 'weekly'].map((d) => h('option', { value: d, selected: d === prefs.digest_frequency }, d)));
    clear(form, h('h2', {}, 'Notification preferences'), table,
      h('fieldset', {}, h('legend', {}, 'Quiet hours'),
        h('label', { htmlFor: 'quiet-on', class: 'check' }, quietOn, ' Hold notifications during quiet hours'),
        h('div', { class: 'row' }, field('From', start), field('Until', end), field('Time zone', tz))),
      field('Digest', digest, 'Held notifications are sent together at this interval.'),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save preferences')), status);
  }

  function collect() {
    const data = new FormData(form);
    const channels = {};
    for (const type of TYPES) channels[type] = data.getAll(`channel:${type}`);
    return {
      muted_types: data.getAll('muted'),
      channels,
      quiet_hours: data.get('quiet_on') ? { start: data.get('quiet_start'), end: data.get('quiet_end') } : null,
      timezone: data.get('timezone'),
      digest_frequency: data.get('digest_frequency'),
    };
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.textContent = 'Saving…';
    try {
      draw(await ctx.api.put('/notifications/preferences', collect()));
      status.textContent = 'Saved.';
      status.dataset.saved = 'true';
      toast('Preferences saved');
    } catch (err) { status.textContent = errorText(err); }
  });

  async function load() {
    try { draw(await ctx.api.get('/notifications/preferences')); form.dataset.loaded = 'true'; } catch (err) { toast(errorText(err), 'error'); }
  }
  clear(main, h('h1', {}, 'Preferences'), form);
  load();
  return { refresh: load };
}
