// ferrocam login: trades a user name and password for a session cookie (HttpOnly, set by the
// gateway), then goes to the viewer.
'use strict';

document.getElementById('login').addEventListener('submit', async (event) => {
  event.preventDefault();
  const error = document.getElementById('login-error');
  const button = document.getElementById('submit');
  error.hidden = true;
  button.disabled = true;
  try {
    const response = await fetch('/api/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        user: document.getElementById('user').value,
        password: document.getElementById('password').value,
      }),
    });
    if (response.ok) {
      location.replace('/');
      return;
    }
    const body = await response.json().catch(() => ({}));
    error.textContent = (body.error && body.error.message) || `login failed (${response.status})`;
    error.hidden = false;
  } catch (e) {
    error.textContent = `cannot reach the gateway: ${e}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});
