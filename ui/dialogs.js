// Confirmation, login and error banner.

import { authenticate } from './api.js';

/** Asks "yes or cancel" in a modal dialog; resolves true on yes. */
export function confirmAction(title, body) {
  const dialog = document.getElementById('confirm');
  dialog.querySelector('#confirm-title').textContent = title;
  dialog.querySelector('#confirm-body').replaceChildren(body);
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true });
    dialog.showModal();
    dialog.querySelector('#confirm-no').focus();
  });
}

/** The login dialog; resolves once /v3/auth/authenticate gave a token. */
export function askLogin(reason) {
  const dialog = document.getElementById('login');
  const form = dialog.querySelector('#login-form');
  const error = dialog.querySelector('#login-error');
  error.textContent = reason && reason.message ? `the cluster says: ${reason.message}` : '';
  return new Promise((resolve) => {
    form.onsubmit = async (e) => {
      e.preventDefault();
      const user = dialog.querySelector('#login-user').value;
      const password = dialog.querySelector('#login-password').value;
      try {
        await authenticate(user, password);
      } catch (err) {
        error.textContent = err.message;
        return;
      }
      dialog.querySelector('#login-password').value = '';
      dialog.close();
      document.dispatchEvent(new CustomEvent('kvd-login'));
      resolve();
    };
    // Escape must not leave a call waiting forever without a way back.
    dialog.oncancel = (e) => e.preventDefault();
    if (!dialog.open) dialog.showModal();
    dialog.querySelector('#login-user').focus();
  });
}

/** A message at the top of the page until dismissed or replaced. */
export function showError(message) {
  const banner = document.getElementById('banner');
  banner.textContent = message;
  banner.hidden = false;
  banner.onclick = () => {
    banner.hidden = true;
  };
}
