// Sign in and register. The first account on an empty embedded-default instance becomes
// admin; GET /auth/setup says whether that applies, and the page says so.
import { clear, errorText, field, h } from '../dom.js';

async function setupNotice(ctx) {
  try {
    const setup = await ctx.api.request('GET', '/auth/setup', { auth: false });
    if (setup.first_user_becomes_admin) {
      return h('p', { class: 'notice', id: 'first-run' },
        'This instance has no accounts yet: the first account you register becomes its admin.');
    }
  } catch { /* older server: no notice */ }
  return null;
}

function shell(title, form, footer) {
  return h('section', { class: 'auth-card' }, h('h1', {}, title), form, footer);
}

export const login = {
  mount(main, ctx) {
    const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
    const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
    const error = h('p', { class: 'error', role: 'alert' });
    const form = h('form', { id: 'login-form' },
      field('Email', email), field('Password', password), error,
      h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      try {
        await ctx.api.login(email.value.trim(), password.value);
        window.location.hash = '#/episodes';
      } catch (err) { error.textContent = errorText(err); }
    });
    const notice = h('div');
    clear(main, shell('Sign in', form,
      h('p', {}, 'No account? ', h('a', { href: '#/register' }, 'Register'))), notice);
    setupNotice(ctx).then((n) => n && main.querySelector('.auth-card').prepend(n));
    email.focus();
  },
};

export const register = {
  mount(main, ctx) {
    const name = h('input', { type: 'text', name: 'name', autocomplete: 'name', required: true, maxLength: 200 });
    const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
    const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minLength: 8 });
    const error = h('p', { class: 'error', role: 'alert' });
    const form = h('form', { id: 'register-form' },
      field('Name', name), field('Email', email), field('Password', password, 'At least 8 characters.'), error,
      h('button', { type: 'submit', class: 'primary' }, 'Create account'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      try {
        await ctx.api.request('POST', '/auth/register', {
          auth: false, body: { name: name.value.trim(), email: email.value.trim(), password: password.value },
        });
        await ctx.api.login(email.value.trim(), password.value);
        window.location.hash = '#/episodes';
      } catch (err) { error.textContent = errorText(err); }
    });
    clear(main, shell('Create an account', form,
      h('p', {}, 'Already registered? ', h('a', { href: '#/login' }, 'Sign in'))));
    setupNotice(ctx).then((n) => n && main.querySelector('.auth-card').prepend(n));
    name.focus();
  },
};
