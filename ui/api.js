// Calls to the member through etcd's JSON gateway (/v3/<service>/<call>),
// the same API etcdctl and every client use: the console has no endpoint
// of its own. With auth on, the token from /v3/auth/authenticate goes in
// the Authorization header, as etcd's gateway expects.

export const session = {
  token: sessionStorage.getItem('kvd.token'),
  user: sessionStorage.getItem('kvd.user'),
};

/** A failed call: HTTP status, gRPC code (etcd's) and message. */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }

  /** The cluster wants a user (auth on, no or an expired token). */
  get needsLogin() {
    return (
      this.code === 16 ||
      /user name is empty|invalid auth token|token is expired/.test(this.message)
    );
  }
}

let loginHandler = null;
let pendingLogin = null;

/** `handler(error)` asks the person to log in; it resolves once they have. */
export function onLoginNeeded(handler) {
  loginHandler = handler;
}

export function setSession(user, token) {
  session.user = user;
  session.token = token;
  if (token) {
    sessionStorage.setItem('kvd.user', user);
    sessionStorage.setItem('kvd.token', token);
  } else {
    sessionStorage.removeItem('kvd.user');
    sessionStorage.removeItem('kvd.token');
  }
}

/** Asks for a login (once for all callers waiting); resolves when logged in. */
export async function login(err) {
  if (!loginHandler) throw err;
  if (!pendingLogin) {
    pendingLogin = loginHandler(err).finally(() => {
      pendingLogin = null;
    });
  }
  return pendingLogin;
}

function errorOf(status, text) {
  let j = null;
  try {
    j = JSON.parse(text);
  } catch {
    // not JSON: a plain-text error
  }
  if (j && j.error && typeof j.error === 'object') j = j.error;
  return new ApiError(status, (j && (j.message || j.error)) || text.trim(), j && (j.code ?? j.grpc_code));
}

/**
 * POSTs `body` to /v3/<path> and returns the decoded response.
 * `opts.base` sends it to another member's client URL instead (without
 * the token: only calls that need no user go there); `opts.timeoutMs`;
 * `opts.login: false` fails instead of asking for a login.
 * Throws ApiError; asks for a login and retries once when the member
 * wants a user.
 */
export async function call(path, body = {}, opts = {}) {
  const headers = {};
  if (!opts.base && session.token) headers.Authorization = session.token;
  const signal = opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : opts.signal;
  let r;
  try {
    r = await fetch((opts.base || '') + '/v3/' + path, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      signal,
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach ${opts.base || 'the member'}: ${e.message}`, 14);
  }
  const text = await r.text();
  if (!r.ok) {
    const err = errorOf(r.status, text);
    if (err.needsLogin && !opts.base && !opts.retried && opts.login !== false) {
      await login(err);
      return call(path, body, { ...opts, retried: true });
    }
    throw err;
  }
  return JSON.parse(text);
}

/**
 * A streaming call (watch): POSTs `body` and hands each
 * `{"result": …}` line's result to `onResult` until the stream ends,
 * `signal` aborts it, or it fails (ApiError).
 */
export async function stream(path, body, onResult, signal) {
  const headers = {};
  if (session.token) headers.Authorization = session.token;
  const r = await fetch('/v3/' + path, { method: 'POST', headers, body: JSON.stringify(body), signal });
  if (!r.ok) {
    const err = errorOf(r.status, await r.text());
    if (err.needsLogin) {
      await login(err);
      return stream(path, body, onResult, signal);
    }
    throw err;
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      const m = JSON.parse(line);
      if (m.error) throw errorOf(m.error.http_code || 500, JSON.stringify(m.error));
      onResult(m.result || {});
    }
  }
}

/** Logs in: /v3/auth/authenticate, then every call carries the token. */
export async function authenticate(name, password) {
  const r = await call('auth/authenticate', { name, password }, { retried: true });
  setSession(name, r.token);
  return r;
}
