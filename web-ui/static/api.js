// The dashboard's client for its own node's HTTP API (ARCHITECTURE.md, "HTTP API"): keeps
// the bearer token, sends it with every call, and turns every failure into an ApiError
// whose message says what went wrong and what to do.

/** @typedef {import('../../protocol/api.ts').ClusterStatus} ClusterStatus */
/** @typedef {import('../../protocol/api.ts').AgentsStatus} AgentsStatus */
/** @typedef {import('../../protocol/api.ts').NodeStatus} NodeStatus */
/** @typedef {import('../../protocol/tasks.ts').Task} Task */
/** @typedef {import('../../protocol/tasks.ts').TaskList} TaskList */
/** @typedef {import('../../protocol/tasks.ts').TaskSubmit} TaskSubmit */
/** @typedef {import('../../protocol/tasks.ts').TaskEvent} TaskEvent */
/** @typedef {import('../../protocol/tokens.ts').TokenSelf} TokenSelf */
/** @typedef {{ field: string, reason: string }} FieldError */

const tokenStorageKey = 'hivemesh.token';
/** Calls that take longer than this are given up, so a hung node shows as an error. */
export const requestTimeoutMs = 10_000;

export class ApiError extends Error {
  name = 'ApiError';
  /**
   * @param {number} status HTTP status, 0 when the node could not be reached
   * @param {string} code the API's error code, or 'network' / 'timeout' / 'bad_response'
   * @param {string} message for people
   * @param {unknown} [details]
   * @param {number | null} [retryAfterSeconds]
   */
  constructor(status, code, message, details, retryAfterSeconds = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  /** True when asking for another token may help. */
  get isAuthProblem() {
    return this.status === 401 || this.status === 403;
  }
}

/**
 * The per-field reasons of a 400: task validation sends details.fields, fastify's schema
 * validation sends details as the array itself; both are { field, reason }.
 * @param {unknown} details
 * @returns {FieldError[]}
 */
export function fieldErrorsOf(details) {
  const list = Array.isArray(details) ? details : (details && typeof details === 'object' && Array.isArray(/** @type {{fields?: unknown}} */ (details).fields))
    ? /** @type {{fields: unknown[]}} */ (details).fields : [];
  return list.filter((/** @type {any} */ item) => item && typeof item.field === 'string' && typeof item.reason === 'string')
    .slice(0, 50)
    .map((/** @type {FieldError} */ item) => ({ field: item.field, reason: item.reason }));
}

/**
 * The token lives in localStorage so a reload does not ask again; when storage is
 * blocked (private windows, policies) it lives in memory for this tab only.
 */
export class TokenStore {
  constructor() {
    /** @type {string | null} */
    this.memory = null;
    this.persistent = true;
  }

  /** @returns {string | null} */
  get() {
    try {
      return window.localStorage.getItem(tokenStorageKey) ?? this.memory;
    } catch {
      return this.memory;
    }
  }

  /** @param {string} token */
  set(token) {
    this.memory = token;
    try {
      window.localStorage.setItem(tokenStorageKey, token);
      this.persistent = true;
    } catch {
      this.persistent = false;
    }
  }

  forget() {
    this.memory = null;
    try {
      window.localStorage.removeItem(tokenStorageKey);
    } catch {
      // Storage blocked: nothing was stored there.
    }
  }
}

export class Api {
  /** @param {TokenStore} tokens */
  constructor(tokens) {
    this.tokens = tokens;
  }

  /** @returns {Record<string, string>} */
  authHeaders() {
    const token = this.tokens.get();
    return token === null ? {} : { authorization: `Bearer ${token}` };
  }

  /**
   * @template T
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<T>}
   */
  async request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json', ...this.authHeaders() };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        cache: 'no-store',
        signal: AbortSignal.timeout(requestTimeoutMs),
      });
    } catch (error) {
      if (error instanceof DOMException && error.name === 'TimeoutError') {
        throw new ApiError(0, 'timeout', `the node at ${location.host} did not answer within ${requestTimeoutMs / 1000} s; it may be overloaded or stuck. The page keeps trying.`);
      }
      throw new ApiError(0, 'network', `cannot reach the node at ${location.host}: is the hivemesh daemon still running? The page keeps trying.`);
    }
    const text = await response.text();
    /** @type {any} */
    let parsed = null;
    if (text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (response.ok) throw new ApiError(response.status, 'bad_response', `the node answered ${method} ${path} with something that is not JSON; is this a hivemesh daemon of the same version?`);
      }
    }
    if (!response.ok) {
      const retryAfter = Number(response.headers.get('retry-after'));
      const error = parsed && typeof parsed === 'object' && parsed.error && typeof parsed.error.message === 'string' ? parsed.error : null;
      const message = error ? error.message : `the node answered ${response.status} ${response.statusText} to ${method} ${path}`;
      throw new ApiError(response.status, error && typeof error.code === 'string' ? error.code : `http_${response.status}`, message, error?.details, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null);
    }
    return /** @type {T} */ (parsed);
  }

  /** @returns {Promise<ClusterStatus>} */
  clusterStatus() {
    return this.request('GET', '/api/status/cluster');
  }

  /** @returns {Promise<AgentsStatus>} */
  agentsStatus() {
    return this.request('GET', '/api/status/agents');
  }

  /** Who the token is and what its role may do. @returns {Promise<TokenSelf>} */
  tokenSelf() {
    return this.request('GET', '/api/tokens/self');
  }

  /**
   * @param {{ status?: string, limit?: number, cursor?: string | null }} query
   * @returns {Promise<TaskList>}
   */
  listTasks(query) {
    const params = new URLSearchParams();
    if (query.status) params.set('status', query.status);
    if (query.limit !== undefined) params.set('limit', String(query.limit));
    if (query.cursor) params.set('cursor', query.cursor);
    const search = params.toString();
    return this.request('GET', `/api/tasks${search ? `?${search}` : ''}`);
  }

  /** @param {string} id @returns {Promise<Task>} */
  getTask(id) {
    return this.request('GET', `/api/tasks/${encodeURIComponent(id)}`);
  }

  /** @param {TaskSubmit} submit @returns {Promise<Task>} */
  submitTask(submit) {
    return this.request('POST', '/api/tasks', submit);
  }

  /** @param {string} id @returns {Promise<unknown>} */
  cancelTask(id) {
    return this.request('DELETE', `/api/tasks/${encodeURIComponent(id)}`);
  }
}
