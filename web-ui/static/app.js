// The dashboard's entry point: asks for a token, learns what the token's role may do,
// polls this node's status every 2 s while the tab is visible, follows the cluster event
// stream, and hands the data to the views.
import { Api, ApiError, TokenStore } from './api.js';
import { shortId } from './format.js';
import { followEventStream } from './sse.js';
import { EventFeed } from './views/events.js';
import { renderNodes } from './views/nodes.js';
import { renderAlerts, renderSummary } from './views/summary.js';
import { TasksView } from './views/tasks.js';

/** @typedef {import('./api.js').NodeStatus} NodeStatus */
/** @typedef {import('./views/tasks.js').Access} Access */

export const pollIntervalMs = 2_000;
/** Task events in the cluster feed trigger an early refresh, at most this often. */
const taskRefreshDebounceMs = 300;

/** @param {string} id */
function element(id) {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the dashboard page lacks #${id}; web-ui/static/index.html and app.js are out of step`);
  return found;
}

class Dashboard {
  constructor() {
    this.tokens = new TokenStore();
    this.api = new Api(this.tokens);
    this.running = false;
    this.polling = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.taskRefreshTimer = null;
    /** @type {AbortController | null} */
    this.events = null;
    this.lastUpdateMs = 0;
    /** When the open token dialog was opened for a 403, dismissing it keeps the token. */
    this.dialogKeepsToken = false;
    /** Counts connects and disconnects: answers to a request made before one are dropped (they may be for another token). */
    this.session = 0;

    this.tasks = new TasksView(this.api, (error, options) => this.authProblem(error, options));
    this.feed = new EventFeed(/** @type {HTMLOListElement} */ (element('event-list')), element('events-state'));
    this.dialog = /** @type {HTMLDialogElement} */ (element('token-dialog'));
    this.tokenInput = /** @type {HTMLInputElement} */ (element('token-input'));
    this.tokenProblem = element('token-problem');

    element('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.saveToken();
    });
    element('token-dismiss').addEventListener('click', () => this.dismissDialog());
    this.dialog.addEventListener('cancel', (event) => {
      event.preventDefault();
      this.dismissDialog();
    });
    element('token-open').addEventListener('click', () => this.askForToken(null, false));
    element('token-change').addEventListener('click', () => this.askForToken(null, this.tokens.get() !== null));
    element('token-upgrade').addEventListener('click', () => this.askForToken(null, this.tokens.get() !== null));
    element('token-forget').addEventListener('click', () => {
      this.tokens.forget();
      this.disconnect();
      this.askForToken('The token was removed from this browser. Paste one to continue.', false);
    });
    window.addEventListener('hashchange', () => {
      if (this.running) this.tasks.selectFromAddress();
    });
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && this.running) this.pollSoon(0);
      this.renderFreshness();
    });
  }

  start() {
    if (this.tokens.get() === null) this.askForToken(null, false);
    else this.connect();
  }

  connect() {
    element('signed-out').hidden = true;
    this.session += 1;
    this.setAccess(null);
    this.running = true;
    this.followClusterEvents();
    this.tasks.selectFromAddress();
    this.pollSoon(0);
  }

  disconnect() {
    this.running = false;
    this.session += 1;
    this.setAccess(null);
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.events?.abort();
    this.events = null;
    this.tasks.stop();
    this.feed.setState('');
  }

  /**
   * The token was refused. A 401 stops everything until a new token is given; a 403 (the
   * token works but may not do this) asks for a stronger one and keeps the current one.
   * @param {ApiError} error
   * @param {{ keepToken: boolean }} options
   */
  authProblem(error, options) {
    const keepToken = options.keepToken && error.status === 403;
    if (!keepToken) this.disconnect();
    const what = error.status === 401 ? 'This node refused the token' : 'This token may not do that';
    this.askForToken(`${what}: ${error.message}`, keepToken);
  }

  /**
   * @param {string | null} problem shown above the field, as the server said it
   * @param {boolean} keepToken whether "Not now" keeps the dashboard running with the current token
   */
  askForToken(problem, keepToken) {
    this.tokenProblem.textContent = problem ?? '';
    this.tokenProblem.hidden = problem === null;
    if (this.dialog.open) {
      this.dialogKeepsToken = this.dialogKeepsToken && keepToken;
      return;
    }
    this.dialogKeepsToken = keepToken;
    // Filled with the token in use, selected, so Enter retries it and typing replaces it.
    this.tokenInput.value = this.tokens.get() ?? '';
    element('token-storage-hint').textContent = this.tokens.persistent
      ? 'The token stays in this browser\'s local storage until you choose "Forget token".'
      : 'This browser blocks local storage, so the token is kept for this tab only.';
    this.dialog.showModal();
    this.tokenInput.focus();
    this.tokenInput.select();
  }

  saveToken() {
    const token = this.tokenInput.value.trim();
    if (token === '') {
      this.tokenProblem.textContent = 'Paste a token first (see where to find one below).';
      this.tokenProblem.hidden = false;
      this.tokenInput.focus();
      return;
    }
    if (/\s/.test(token)) {
      this.tokenProblem.textContent = 'A token has no spaces or line breaks; copy just the token itself.';
      this.tokenProblem.hidden = false;
      this.tokenInput.focus();
      return;
    }
    this.tokens.set(token);
    this.dialog.close();
    this.disconnect();
    this.connect();
  }

  dismissDialog() {
    this.dialog.close();
    if (this.dialogKeepsToken && this.tokens.get() !== null) return;
    this.disconnect();
    element('signed-out').hidden = false;
    element('where').textContent = `not signed in · ${location.host}`;
  }

  /**
   * What the token may do decides which controls the page offers; until it is known (and
   * whenever the token changes) none are.
   * @param {Access | null} access
   */
  setAccess(access) {
    this.tasks.setAccess(access);
    const who = element('token-who');
    if (access === null || access.role === null) {
      who.textContent = '';
      who.removeAttribute('title');
    } else {
      who.textContent = `${access.name ?? 'token'} · ${access.role}${access.role === 'viewer' ? ' (read-only)' : ''}`;
      who.title = `The token in use is "${access.name}", with the ${access.role} role`;
    }
  }

  /** @returns {Promise<Access>} */
  async learnAccess() {
    try {
      const self = await this.api.tokenSelf();
      return { name: self.name, role: self.role, actions: new Set(self.actions) };
    } catch (error) {
      // A node of an older version has no such route: offer everything, as the page did
      // before it could ask; the node still refuses what the token may not do (403).
      if (error instanceof ApiError && error.status === 404) return { name: null, role: null, actions: null };
      throw error;
    }
  }

  /** @param {number} delayMs */
  pollSoon(delayMs) {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.poll();
    }, delayMs);
  }

  async poll() {
    // Hidden tabs do not poll; visibilitychange starts again. One poll at a time.
    if (!this.running || document.hidden || this.polling) return;
    this.polling = true;
    const session = this.session;
    try {
      const [cluster, agents, access] = await Promise.all([this.api.clusterStatus(), this.api.agentsStatus(),
        this.tasks.access === null ? this.learnAccess() : this.tasks.access]);
      // The token changed meanwhile: these answers may be another token's.
      if (!this.running || session !== this.session) return;
      if (access !== this.tasks.access) this.setAccess(access);
      const nowMs = Date.now();
      /** @type {Map<string, NodeStatus>} */
      const nodesById = new Map(agents.nodes.map((node) => [node.id, node]));
      renderSummary(element('summary'), cluster, nodesById);
      renderAlerts(element('alerts'), cluster, agents.nodes, nowMs);
      renderNodes(element('node-list'), agents.nodes, nowMs);
      element('nodes-count').textContent = `(${agents.nodes.length})`;
      element('where').textContent = `${cluster.nodeName} · cluster ${cluster.clusterId === null ? 'not formed yet' : shortId(cluster.clusterId)} · ${location.host}`;
      document.title = `hivemesh · ${cluster.nodeName}`;
      this.tasks.setNodes(nodesById);
      this.feed.nodeNames = new Map(agents.nodes.map((node) => [node.id, node.name]));
      element('connection').hidden = true;
      this.lastUpdateMs = nowMs;
      await this.tasks.refresh();
    } catch (error) {
      // A refusal of the token given before the current one is no news about this one.
      if (session === this.session) this.pollFailed(error);
    } finally {
      this.polling = false;
      this.renderFreshness();
      // A new token skipped its first poll while this one ran: it gets one now.
      if (this.running && !document.hidden) this.pollSoon(session === this.session ? pollIntervalMs : 0);
    }
  }

  /** @param {unknown} error */
  pollFailed(error) {
    if (error instanceof ApiError && error.isAuthProblem) {
      this.authProblem(error, { keepToken: false });
      return;
    }
    const banner = element('connection');
    const message = error instanceof Error ? error.message : String(error);
    const stale = this.lastUpdateMs === 0 ? '' : ' The figures below are from the last successful update.';
    const text = error instanceof ApiError && error.status === 503
      ? `This node cannot answer right now: ${message}. It retries every ${pollIntervalMs / 1000} s.${stale}`
      : `${message}${stale}`;
    // The same text again is not news; rewriting it would make screen readers repeat the alert.
    if (banner.textContent !== text) banner.textContent = text;
    banner.hidden = false;
  }

  renderFreshness() {
    const label = element('freshness');
    if (!this.running) label.textContent = '';
    else if (document.hidden) label.textContent = 'paused while the tab is hidden';
    else if (this.lastUpdateMs > 0) label.textContent = `updated ${new Date(this.lastUpdateMs).toLocaleTimeString()}`;
  }

  followClusterEvents() {
    const controller = new AbortController();
    this.events = controller;
    this.feed.setState('connecting…');
    void followEventStream('/api/events', () => this.api.authHeaders(), {
      onOpen: () => {
        if (this.events === controller) this.feed.setState('live');
      },
      onMessage: (message) => {
        if (this.events !== controller) return;
        // The daemon greets each new stream with "hello": a sign of life, not news.
        if (message.event === 'hello') return;
        this.feed.add(message, Date.now());
        if (/task/i.test(message.event) || /"taskId"/.test(message.data)) this.refreshTasksSoon();
      },
      onProblem: (problem) => {
        if (this.events !== controller) return;
        if (problem.status === 401 || problem.status === 403) {
          this.authProblem(new ApiError(problem.status, 'unauthorized', problem.message), { keepToken: false });
          return;
        }
        this.feed.setState(problem.retryInMs === null
          ? `stopped: ${problem.message}`
          : `interrupted (${problem.message}); reconnecting in ${Math.ceil(problem.retryInMs / 1000)} s`);
      },
    }, controller.signal);
  }

  /** A task changed somewhere: refresh soon (counts, list, panel) rather than at the next 2 s tick. */
  refreshTasksSoon() {
    if (this.taskRefreshTimer !== null || document.hidden) return;
    this.taskRefreshTimer = setTimeout(() => {
      this.taskRefreshTimer = null;
      // poll() skips when one is under way; the next tick comes 2 s after this one.
      if (this.running) void this.poll();
    }, taskRefreshDebounceMs);
  }
}

new Dashboard().start();
