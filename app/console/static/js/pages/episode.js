// One episode: its fields (updated live), who is viewing it (initials + status), an edit
// form, its files (upload with progress, download) and its jobs with live progress bars.
import { avatar, bytes, clear, errorText, field, h, timeEl, toast } from '../dom.js';

const EDITABLE = ['title', 'episode_number', 'season', 'description', 'categories', 'status'];
const JOB_DONE = new Set(['completed', 'failed', 'cancelled']);

export function mount(main, ctx) {
  const id = Number(ctx.params[0]);
  const state = { episode: null, viewers: new Map(), statuses: new Map(), jobs: new Map(), files: new Map() };
  const canEdit = ctx.can('editor');

  const heading = h('h1', { id: 'episode-title' }, '…');
  const facts = h('dl', { class: 'facts', id: 'episode-facts' });
  const changedNote = h('p', { class: 'notice', id: 'episode-changed', hidden: true, role: 'status' });
  const viewersBox = h('ul', { class: 'viewers', id: 'viewers', 'aria-label': 'Viewing now' });
  const filesList = h('ul', { class: 'list', id: 'files' });
  const jobsList = h('ul', { class: 'list', id: 'jobs' });
  const form = canEdit ? editForm() : null;

  // ---- episode fields -------------------------------------------------------------------
  function showEpisode(ep) {
    state.episode = ep;
    heading.textContent = ep.title;
    clear(facts,
      h('dt', {}, 'Status'), h('dd', { id: 'episode-status' }, h('span', { class: `pill status-${ep.status}` }, ep.status)),
      h('dt', {}, 'Season / episode'), h('dd', {}, `${ep.season ?? '–'} / ${ep.episode_number}`),
      h('dt', {}, 'Categories'), h('dd', {}, (ep.categories || []).map((c) => h('span', { class: 'tag' }, c))),
      h('dt', {}, 'Description'), h('dd', { id: 'episode-description' }, ep.description || '—'),
      h('dt', {}, 'Updated'), h('dd', {}, timeEl(ep.updated_at)));
    if (form) form.fill(ep);
  }

  function editForm() {
    const inputs = {
      title: h('input', { type: 'text', name: 'title', required: true, maxLength: 200 }),
      episode_number: h('input', { type: 'number', name: 'episode_number', min: 1, required: true }),
      season: h('input', { type: 'number', name: 'season', min: 1 }),
      description: h('textarea', { name: 'description', rows: 3 }),
      categories: h('input', { type: 'text', name: 'categories' }),
      status: h('select', { name: 'status' }, ['draft', 'in_review', 'archived'].map((s) => h('option', { value: s }, s))),
    };
    const dirty = new Set();
    Object.entries(inputs).forEach(([k, el]) => el.addEventListener('input', () => dirty.add(k)));
    const error = h('p', { class: 'error', role: 'alert' });
    const publish = h('button', { type: 'button', id: 'publish' }, 'Publish');
    const remove = h('button', { type: 'button', class: 'danger', id: 'delete-episode' }, 'Delete');
    const el = h('form', { class: 'card', id: 'episode-form' }, h('h2', {}, 'Edit'),
      h('div', { class: 'row' }, field('Title', inputs.title), field('Episode number', inputs.episode_number),
        field('Season', inputs.season), field('Status', inputs.status)),
      field('Description', inputs.description), field('Categories', inputs.categories, 'Comma separated'),
      error, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save'), publish, remove));
    el.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      // Only the fields this person changed: another editor's concurrent change to a
      // different field is not overwritten with this page's older value.
      const values = {
        title: inputs.title.value.trim(), episode_number: Number(inputs.episode_number.value),
        description: inputs.description.value, status: inputs.status.value,
        categories: inputs.categories.value.split(',').map((c) => c.trim()).filter(Boolean),
        season: inputs.season.value ? Number(inputs.season.value) : undefined,
      };
      const body = {};
      for (const key of dirty) if (values[key] !== undefined) body[key] = values[key];
      if (!Object.keys(body).length) { error.textContent = 'Nothing changed.'; return; }
      try {
        const saved = await ctx.api.patch(`/episodes/${id}`, body);
        dirty.clear();
        showEpisode({ ...state.episode, ...saved });
        toast('Saved');
      } catch (err) { error.textContent = errorText(err); }
    });
    publish.addEventListener('click', async () => {
      try { showEpisode(await ctx.api.post(`/episodes/${id}/publish`)); toast('Published'); } catch (err) { error.textContent = errorText(err); }
    });
    remove.addEventListener('click', async () => {
      if (!window.confirm('Delete this episode with its jobs and files?')) return;
      try { await ctx.api.del(`/episodes/${id}`); ctx.navigate('#/episodes'); } catch (err) { error.textContent = errorText(err); }
    });
    // Fields someone is typing into keep their text; the others follow the live value.
    el.fill = (ep) => {
      // A published episode's status is not one the form can set: shown, not offered.
      const options = ['draft', 'in_review', 'archived'];
      if (!dirty.has('status')) {
        clear(inputs.status, options.concat(options.includes(ep.status) ? [] : [ep.status])
          .map((s) => h('option', { value: s, disabled: !options.includes(s) }, s)));
      }
      for (const key of EDITABLE) {
        if (dirty.has(key)) continue;
        const value = ep[key];
        inputs[key].value = key === 'categories' ? (value || []).join(', ') : (value ?? '');
      }
    };
    return el;
  }

  // ---- viewers ----------------------------------------------------------------------------
  function drawViewers() {
    clear(viewersBox, [...state.viewers.values()].map((v) => {
      const status = state.statuses.get(v.id) || 'online';
      return h('li', { dataset: { userId: v.id } }, avatar(v.name, status), h('span', { class: 'viewer-name' }, v.name));
    }));
    if (!state.viewers.size) viewersBox.append(h('li', { class: 'muted' }, 'Nobody'));
  }
  function setViewers(list) {
    state.viewers = new Map((list || []).map((v) => [v.id, v]));
    drawViewers();
  }
  async function loadViewers() {
    try {
      setViewers((await ctx.api.get(`/presence/episode/${id}/viewers`)).items);
    } catch { /* keep */ }
  }
  async function loadStatuses() {
    try {
      const online = await ctx.api.get('/presence/online');
      state.statuses = new Map(online.items.map((p) => [p.user_id, p.status]));
      drawViewers();
    } catch { /* keep */ }
  }

  // ---- files ------------------------------------------------------------------------------
  function fileRow(f) {
    const download = h('button', { type: 'button', class: 'small' }, 'Download');
    download.addEventListener('click', () => downloadFile(ctx, f.id));
    const items = [h('span', { class: 'file-name' }, f.filename), ' ', h('small', { class: 'muted' }, `${bytes(f.size)} · `, timeEl(f.created_at)), ' ', download];
    if (canEdit) {
      const remove = h('button', { type: 'button', class: 'small danger' }, 'Delete');
      remove.addEventListener('click', async () => {
        try { await ctx.api.del(`/files/${f.id}`); state.files.delete(f.id); drawFiles(); } catch (err) { toast(errorText(err), 'error'); }
      });
      items.push(' ', remove);
    }
    return h('li', { class: 'file', dataset: { fileId: f.id } }, items);
  }
  function drawFiles() {
    clear(filesList, [...state.files.values()].sort((a, b) => b.id - a.id).map(fileRow));
    if (!state.files.size) filesList.append(h('li', { class: 'muted' }, 'No files.'));
  }
  async function loadFiles() {
    const page = await ctx.api.get(`/episodes/${id}/files`, { limit: 100 });
    state.files = new Map(page.items.map((f) => [f.id, f]));
    drawFiles();
  }
  function uploadForm() {
    const input = h('input', { type: 'file', name: 'file', id: 'upload-input' });
    const bar = h('progress', { max: 100, value: 0, id: 'upload-progress', hidden: true });
    const label = h('span', { class: 'muted', 'aria-live': 'polite' });
    const el = h('form', { class: 'inline-form', id: 'upload-form' }, field('Upload a file', input), bar, label,
      h('button', { type: 'submit' }, 'Upload'));
    el.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (!input.files.length) { label.textContent = 'Choose a file first.'; return; }
      bar.hidden = false;
      bar.value = 0;
      try {
        const file = await ctx.api.upload(`/episodes/${id}/files`, input.files[0], (pct) => {
          bar.value = pct;
          label.textContent = `${pct}%`;
        });
        state.files.set(file.id, file);
        drawFiles();
        label.textContent = `Uploaded ${file.filename}`;
        el.reset();
      } catch (err) { label.textContent = errorText(err); }
    });
    return el;
  }

  // ---- jobs -------------------------------------------------------------------------------
  function jobRow(job) {
    const pct = job.progress ?? 0;
    const actions = [];
    const cancelling = job.status === 'running' && job.cancel_requested;
    if (canEdit && !JOB_DONE.has(job.status) && !cancelling) {
      const cancel = h('button', { type: 'button', class: 'small', dataset: { action: 'cancel' } }, 'Cancel');
      cancel.addEventListener('click', () => jobAction(job.id, 'cancel'));
      actions.push(cancel);
    }
    if (canEdit && (job.status === 'failed' || job.status === 'cancelled')) {
      const retry = h('button', { type: 'button', class: 'small', dataset: { action: 'retry' } }, 'Retry');
      retry.addEventListener('click', () => jobAction(job.id, 'retry'));
      actions.push(retry);
    }
    if (job.status === 'completed' && job.result && job.result.file_id) {
      const download = h('button', { type: 'button', class: 'small', dataset: { action: 'download' } }, 'Download zip');
      download.addEventListener('click', () => downloadFile(ctx, job.result.file_id));
      actions.push(download);
    }
    return h('li', { class: `job job-${job.status}`, dataset: { jobId: job.id, status: job.status } },
      h('span', { class: 'job-name' }, `${job.type} #${job.id}`), ' ',
      h('span', { class: `pill status-${job.status}` }, cancelling ? 'cancelling' : job.status), ' ',
      h('progress', { max: 100, value: pct, 'aria-label': `${job.type} #${job.id} progress` }),
      h('span', { class: 'job-pct' }, `${pct}%`),
      job.error ? h('small', { class: 'error' }, ` ${job.error}`) : null, ' ', actions);
  }
  // The list is redrawn, and a focused button gets the focus back: progress events
  // arrive several times a second and must not pull a keyboard user's focus away.
  function drawJobs() {
    const active = document.activeElement;
    const focused = active && active.closest && active.closest('#jobs li[data-job-id]');
    const focus = focused ? { id: focused.dataset.jobId, action: active.dataset.action } : null;
    clear(jobsList, [...state.jobs.values()].sort((a, b) => b.id - a.id).map(jobRow));
    if (!state.jobs.size) jobsList.append(h('li', { class: 'muted' }, 'No jobs.'));
    if (focus) {
      const row = jobsList.querySelector(`li[data-job-id="${focus.id}"]`);
      const target = row && (row.querySelector(`[data-action="${focus.action}"]`) || row.querySelector('button'));
      if (target) target.focus();
    }
  }
  async function loadJobs() {
    const page = await ctx.api.get('/jobs', { episode_id: id, limit: 50 });
    state.jobs = new Map(page.items.map((j) => [j.id, j]));
    drawJobs();
  }
  async function refetchJob(jobId) {
    try { state.jobs.set(jobId, await ctx.api.get(`/jobs/${jobId}`)); drawJobs(); } catch { /* gone */ }
  }
  async function jobAction(jobId, action) {
    try { state.jobs.set(jobId, await ctx.api.post(`/jobs/${jobId}/${action}`)); drawJobs(); } catch (err) { toast(errorText(err), 'error'); }
  }
  function exportButton() {
    const button = h('button', { type: 'button', id: 'create-export' }, 'Export as zip');
    button.addEventListener('click', async () => {
      try {
        const job = await ctx.api.post('/jobs', { type: 'export', episode_id: id, params: { include_files: true } });
        if (!state.jobs.has(job.id) || state.jobs.get(job.id).status === 'queued') state.jobs.set(job.id, job);
        drawJobs();
      } catch (err) { toast(errorText(err), 'error'); }
    });
    return button;
  }

  // ---- live events --------------------------------------------------------------------------
  const mine = (env) => (env.data || {}).episode_id === id;
  const on = (ns, name, fn) => ctx.onCleanup(ctx.rt.on(ns, name, (env) => mine(env) && fn(env.data, env)));
  on('/episodes', 'episode_updated', (d, env) => {
    if (d.episode) showEpisode({ ...state.episode, ...d.episode });
    else ctx.api.get(`/episodes/${id}`).then(showEpisode);
    const who = (env.actor && env.actor.name) || 'Someone';
    changedNote.textContent = `${who} changed ${(d.changed_fields || []).join(', ') || 'this episode'} ${new Date().toLocaleTimeString()}`;
    changedNote.hidden = false;
  });
  on('/episodes', 'episode_published', () => ctx.api.get(`/episodes/${id}`).then(showEpisode));
  on('/episodes', 'episode_deleted', (d, env) => {
    toast(`${(env.actor && env.actor.name) || 'Someone'} deleted this episode`, 'error');
    ctx.navigate('#/episodes');
  });
  on('/episodes', 'viewer_joined', (d) => { if (d.user) { state.viewers.set(d.user.id, d.user); drawViewers(); } });
  on('/episodes', 'viewer_left', (d) => {
    // The user may still view it from another tab: the list is the server's to say.
    if (d.user) { state.viewers.delete(d.user.id); drawViewers(); loadViewers(); }
  });
  // A coalesced form of the above for big rooms: refetch the list.
  on('/episodes', 'viewers_changed', (d) => { if (Array.isArray(d.viewers)) setViewers(d.viewers); else loadViewers(); });
  on('/episodes', 'file_uploaded', (d) => d.file_id && ctx.api.get(`/files/${d.file_id}`).then((f) => { state.files.set(f.id, f); drawFiles(); }).catch(() => {}));
  on('/episodes', 'file_deleted', (d) => { state.files.delete(d.file_id); drawFiles(); });
  ctx.onCleanup(ctx.rt.on('/feed', 'presence_changed', (env) => {
    const p = env.data || {};
    state.statuses.set(p.user_id, p.status);
    drawViewers();
  }));
  for (const name of ['job_created', 'job_started', 'job_completed', 'job_failed', 'job_retry', 'job_retried', 'job_cancelled']) {
    on('/jobs', name, (d) => refetchJob(d.job_id));
  }
  on('/jobs', 'job_progress', (d) => {
    const job = state.jobs.get(d.job_id);
    if (!job) { refetchJob(d.job_id); return; }
    if (!JOB_DONE.has(job.status)) job.status = 'running';
    job.progress = Math.max(job.progress || 0, d.progress || 0);
    drawJobs();
  });

  ctx.onCleanup(ctx.rt.onConnected('/feed', loadStatuses));
  ctx.onCleanup(ctx.rt.want('/episodes', 'join', { episode_id: id }, {
    undo: 'leave', onAck: (ack) => { if (ack && ack.ok) setViewers(ack.viewers); },
  }));
  ctx.onCleanup(ctx.rt.want('/jobs', 'subscribe', { episode_id: id }, { undo: 'unsubscribe' }));

  clear(main,
    h('p', {}, h('a', { href: '#/episodes' }, '← Episodes'), ' · ', h('a', { href: `#/timeline/episode/${id}` }, 'Timeline')),
    heading, changedNote,
    h('div', { class: 'grid' },
      h('section', { class: 'card' }, h('h2', {}, 'Details'), facts),
      h('section', { class: 'card' }, h('h2', {}, 'Viewing now'), viewersBox)),
    form,
    h('section', { class: 'card' }, h('h2', {}, 'Files'), canEdit ? uploadForm() : null, filesList),
    h('section', { class: 'card' }, h('h2', {}, 'Jobs'), canEdit ? exportButton() : null, jobsList));

  async function load() {
    try {
      const ep = await ctx.api.get(`/episodes/${id}`);
      showEpisode(ep);
      if (!state.viewers.size) setViewers(ep.viewers);
      await Promise.all([loadFiles(), loadJobs(), loadStatuses()]);
    } catch (err) {
      clear(main, h('h1', {}, 'Episode not available'), h('p', {}, errorText(err)), h('a', { href: '#/episodes' }, 'Back to episodes'));
    }
  }
  load();
  return { refresh: () => { load(); loadViewers(); } };
}

export async function downloadFile(ctx, fileId) {
  try {
    const { url } = await ctx.api.get(`/files/${fileId}/download-url`);
    const a = h('a', { href: url, download: '', hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) { toast(errorText(err), 'error'); }
}
