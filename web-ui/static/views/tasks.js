// The tasks view: the list (status filter, cursor paging), the detail panel with output
// streamed live from GET /api/tasks/:id/events, the cancel button, and the submit form
// that shows the API's per-field validation errors next to the fields. The form and the
// cancel button are offered only to a token whose role may use them.
import { ApiError, fieldErrorsOf } from '../api.js';
import { h, replaceKeepingFocus } from '../dom.js';
import { dateTime, duration, excerpt, shortId } from '../format.js';
import { followEventStream } from '../sse.js';
import { nodeLabel, statusSymbols } from './summary.js';

/** @typedef {import('../api.js').Api} Api */
/** @typedef {import('../api.js').Task} Task */
/** @typedef {import('../api.js').NodeStatus} NodeStatus */
/** @typedef {import('../api.js').TaskEvent} TaskEvent */
/** @typedef {(error: ApiError, options: { keepToken: boolean }) => void} AuthProblemHandler */
/**
 * What the token in use may do, from GET /api/tokens/self. `actions` is null when the node
 * is too old to say: then every control is offered and the node refuses what it must (403).
 * @typedef {{ name: string | null, role: string | null, actions: ReadonlySet<string> | null }} Access
 */

export const tasksPageSize = 25;
/** Live output kept per task; beyond it the oldest text is cut (the stored output is bounded too). */
export const liveOutputLengthMax = 1024 * 1024;
/** Pages remembered for "Previous". */
const pageHistoryMax = 1000;
const activeStatuses = new Set(['queued', 'assigned', 'running']);
const finishedStatuses = new Set(['completed', 'failed', 'cancelled']);

/** The form's fields by the name the API uses for them in 400 details. */
const formFields = /** @type {const} */ ({
  model: 'submit-model',
  capability: 'submit-capability',
  title: 'submit-title-input',
  prompt: 'submit-prompt',
  priority: 'submit-priority',
});

/**
 * Output received for one task: chunks carry (attempt, sequence), so a reconnect that
 * replays chunks, or a retry on another node that starts over, is handled.
 */
export class LiveOutput {
  constructor() {
    this.attempt = 0;
    this.nextSequence = 0;
    this.text = '';
    this.gap = false;
    this.cutFront = false;
  }

  /**
   * @param {{ attempt: number, sequence: number, text: string }} chunk
   * @returns {'appended' | 'restarted' | 'ignored'}
   */
  accept(chunk) {
    if (chunk.attempt < this.attempt) return 'ignored';
    let result = /** @type {'appended' | 'restarted'} */ ('appended');
    if (chunk.attempt > this.attempt) {
      result = this.attempt === 0 ? 'appended' : 'restarted';
      this.attempt = chunk.attempt;
      this.nextSequence = 0;
      this.text = '';
      this.gap = false;
      this.cutFront = false;
    }
    if (chunk.sequence < this.nextSequence) return 'ignored';
    if (chunk.sequence > this.nextSequence) this.gap = true;
    this.nextSequence = chunk.sequence + 1;
    this.text += chunk.text;
    if (this.text.length > liveOutputLengthMax) {
      this.text = this.text.slice(this.text.length - liveOutputLengthMax);
      this.cutFront = true;
    }
    return result;
  }
}

export class TasksView {
  /**
   * @param {Api} api
   * @param {AuthProblemHandler} onAuthProblem
   */
  constructor(api, onAuthProblem) {
    this.api = api;
    this.onAuthProblem = onAuthProblem;
    /** @type {Map<string, NodeStatus>} */
    this.nodesById = new Map();
    this.filter = '';
    /** @type {string | null} cursor of the page shown, null for the first */
    this.cursor = null;
    /** @type {Array<string | null>} cursors of the pages before this one */
    this.previousCursors = [];
    /** @type {string | null} */
    this.nextCursor = null;
    /** @type {Task[]} */
    this.tasks = [];
    this.listLoaded = false;
    /** @type {string | null} */
    this.selectedId = null;
    /** @type {Task | null} */
    this.selected = null;
    /** Whether `selected` came from GET /api/tasks/:id (or the final event), not from a list page. */
    this.selectedFetched = false;
    /** @type {string | null} why the task could not be loaded */
    this.detailError = null;
    /** @type {string | null} why the last action on it (cancel) failed; kept across refreshes */
    this.actionError = null;
    this.detailNotice = '';
    this.live = new LiveOutput();
    /** @type {AbortController | null} */
    this.stream = null;
    this.streamState = '';
    this.suggestionKey = '';
    /** What the detail panel shows, to skip redraws that would change nothing. */
    this.detailKey = '';
    /** @type {Access | null} null until the node has said what the token may do */
    this.access = null;

    this.rows = /** @type {HTMLElement} */ (document.getElementById('task-rows'));
    this.listError = /** @type {HTMLElement} */ (document.getElementById('tasks-error'));
    this.detail = /** @type {HTMLElement} */ (document.getElementById('task-detail'));
    this.pageLabel = /** @type {HTMLElement} */ (document.getElementById('page-label'));
    this.pageFirst = /** @type {HTMLButtonElement} */ (document.getElementById('page-first'));
    this.pagePrevious = /** @type {HTMLButtonElement} */ (document.getElementById('page-previous'));
    this.pageNext = /** @type {HTMLButtonElement} */ (document.getElementById('page-next'));
    this.filterSelect = /** @type {HTMLSelectElement} */ (document.getElementById('task-filter'));
    this.form = /** @type {HTMLFormElement} */ (document.getElementById('submit-form'));
    this.formError = /** @type {HTMLElement} */ (document.getElementById('submit-form-error'));
    this.submitResult = /** @type {HTMLElement} */ (document.getElementById('submit-result'));
    this.submitButton = /** @type {HTMLButtonElement} */ (document.getElementById('submit-button'));
    this.submitUnavailable = /** @type {HTMLElement} */ (document.getElementById('submit-unavailable'));
    this.submitUnavailableText = /** @type {HTMLElement} */ (document.getElementById('submit-unavailable-text'));
    this.tokenUpgrade = /** @type {HTMLButtonElement} */ (document.getElementById('token-upgrade'));
    /** The output element survives redraws of the panel, so streaming text and scroll stay put. */
    this.output = h('pre', { class: 'output', 'aria-label': 'task output', tabindex: 0 });

    this.filterSelect.addEventListener('change', () => {
      this.filter = this.filterSelect.value;
      this.goToPage(null, []);
    });
    this.pageFirst.addEventListener('click', () => this.goToPage(null, []));
    this.pagePrevious.addEventListener('click', () => {
      const previous = this.previousCursors.slice(0, -1);
      this.goToPage(this.previousCursors.at(-1) ?? null, previous);
    });
    this.pageNext.addEventListener('click', () => {
      if (this.nextCursor === null) return;
      this.goToPage(this.nextCursor, [...this.previousCursors, this.cursor].slice(-pageHistoryMax));
    });
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.submit();
    });
    this.renderPager();
    this.renderAccess();
  }

  /**
   * Whether the token may do an action; nothing is offered while that is not known yet.
   * @param {string} action one of protocol/tokens.ts's actions
   */
  may(action) {
    return this.access !== null && (this.access.actions === null || this.access.actions.has(action));
  }

  /**
   * The token changed, or the node said what it may do: show the controls that fit.
   * @param {Access | null} access
   */
  setAccess(access) {
    this.access = access;
    this.renderAccess();
    if (this.listLoaded) this.renderList();
    this.renderDetail();
  }

  renderAccess() {
    const canSubmit = this.may('submit');
    this.form.hidden = !canSubmit;
    this.submitUnavailable.hidden = canSubmit;
    this.tokenUpgrade.hidden = this.access === null;
    if (this.access === null) {
      this.submitUnavailableText.textContent = 'Checking what this token may do…';
    } else if (!canSubmit) {
      const token = this.access.name === null ? 'This token' : `This token ("${this.access.name}")`;
      const what = this.access.role === 'viewer'
        ? `${token} is a viewer token, read-only: it shows the cluster and its tasks but may not submit or cancel tasks.`
        : `${token} has the ${this.access.role ?? 'unknown'} role, which may not submit tasks.`;
      this.submitUnavailableText.replaceChildren(`${what} To submit, use an operator or admin token (an admin makes one with `,
        h('code', null, 'hivemesh token create --role operator --name NAME'), ').');
    }
  }

  /** @param {Map<string, NodeStatus>} nodesById */
  setNodes(nodesById) {
    this.nodesById = nodesById;
    const models = new Set();
    const capabilities = new Set();
    for (const node of nodesById.values()) {
      if (node.state === 'dead') continue;
      for (const model of node.models.installed) models.add(model.name);
      for (const capability of node.capabilities) capabilities.add(capability);
    }
    const sortedModels = [...models].sort();
    const sortedCapabilities = [...capabilities].sort();
    // Only redraw the suggestions when they change, or an open suggestion list would flicker.
    const key = JSON.stringify([sortedModels, sortedCapabilities]);
    if (key === this.suggestionKey) return;
    this.suggestionKey = key;
    /** @type {HTMLElement} */ (document.getElementById('model-options')).replaceChildren(...sortedModels.map((name) => h('option', { value: name })));
    /** @type {HTMLElement} */ (document.getElementById('capability-options')).replaceChildren(...sortedCapabilities.map((name) => h('option', { value: name })));
  }

  /** @param {string | null} cursor @param {Array<string | null>} previous */
  goToPage(cursor, previous) {
    this.cursor = cursor;
    this.previousCursors = previous;
    void this.refreshList();
  }

  /** Called every poll: the page shown and the open task. */
  async refresh() {
    await Promise.all([this.refreshList(), this.refreshSelected()]);
  }

  async refreshList() {
    const query = { status: this.filter, cursor: this.cursor, limit: tasksPageSize };
    try {
      const page = await this.api.listTasks(query);
      // A later request (filter or page changed meanwhile) wins over this one.
      if (query.status !== this.filter || query.cursor !== this.cursor) return;
      this.tasks = page.tasks;
      this.nextCursor = page.nextCursor;
      this.listLoaded = true;
      this.listError.hidden = true;
      this.renderList();
    } catch (error) {
      this.showListError(error);
    }
    this.renderPager();
  }

  /** @param {unknown} error */
  showListError(error) {
    if (error instanceof ApiError && error.isAuthProblem) {
      this.onAuthProblem(error, { keepToken: false });
      return;
    }
    this.listError.textContent = error instanceof ApiError && error.status === 404 && error.code === 'not_found'
      ? `This node does not serve the task list (${error.message}). It may run an older hivemesh; upgrade it.`
      : `Could not load the tasks: ${error instanceof Error ? error.message : String(error)}`;
    this.listError.hidden = false;
  }

  renderPager() {
    const pageNumber = this.previousCursors.length + 1;
    this.pageLabel.textContent = `page ${pageNumber}`;
    this.pageFirst.disabled = this.cursor === null;
    this.pagePrevious.disabled = this.cursor === null;
    this.pageNext.disabled = this.nextCursor === null;
  }

  renderList() {
    const now = Date.now();
    if (this.tasks.length === 0) {
      const what = this.filter !== '' ? `No ${this.filter} tasks on this page.`
        : this.may('submit') ? 'No tasks yet. Submit one with the form, or with hivemesh submit.' : 'No tasks yet.';
      replaceKeepingFocus(this.rows, [h('tr', null, h('td', { colspan: 7, class: 'empty' }, what))]);
      return;
    }
    replaceKeepingFocus(this.rows, this.tasks.map((task) => {
      const row = h('tr', { class: task.id === this.selectedId ? 'selected' : null, 'data-task-id': task.id },
        h('td', null, h('button', { type: 'button', class: 'link-button', 'data-focus': `task-${task.id}`, 'aria-label': `task ${task.id}: show details`, title: task.id }, idParts(shortId(task.id)))),
        // Titles wrap between words; a word wider than the column ends in an ellipsis, and the
        // whole title is in the tooltip and the detail panel (app.css, .title-text).
        h('td', { class: 'title-cell' },
          task.title ? h('div', { class: 'title-text', title: task.title }, excerpt(task.title, 80)) : h('div', { class: 'title-text empty' }, 'untitled'),
          // Why a queued task waits is the first question about it; answer it in the list.
          task.status === 'queued' && task.waitingFor ? h('div', { class: 'title-text sub', title: task.waitingFor }, excerpt(task.waitingFor, 100)) : null),
        h('td', { class: 'col-optional' }, task.model ?? (task.capability === null ? '–' : `capability ${task.capability}`)),
        h('td', null, statusBadge(task.status)),
        h('td', { class: 'col-optional' }, task.assignedNode === null ? h('span', { class: 'empty' }, '–') : nodeLabel(task.assignedNode, this.nodesById)),
        h('td', { class: 'col-optional nowrap' }, `${task.attempt} / ${task.maxAttempts}`),
        h('td', { class: 'nowrap', title: dateTime(task.createdAt) }, age(now - task.createdAt)),
      );
      // One listener on the row: a click anywhere, or Enter/Space on its button (whose click bubbles here).
      row.addEventListener('click', () => this.select(task.id, true));
      return row;
    }));
  }

  /**
   * Opens a task in the detail panel and follows its events while it is not finished.
   * @param {string} id
   * @param {boolean} moveFocus
   */
  select(id, moveFocus) {
    if (this.selectedId !== id) {
      this.closeStream();
      this.selectedId = id;
      this.selected = this.tasks.find((task) => task.id === id) ?? null;
      this.selectedFetched = false;
      this.detailError = null;
      this.actionError = null;
      this.detailNotice = '';
      this.live = new LiveOutput();
      this.output.textContent = '';
      this.streamState = '';
      for (const row of this.rows.querySelectorAll('tr')) row.classList.toggle('selected', row.dataset.taskId === id);
    }
    this.renderDetail();
    // The address names the open task, so it can be bookmarked or sent to someone.
    history.replaceState(null, '', `#task=${encodeURIComponent(id)}`);
    if (moveFocus) this.detail.focus();
    void this.refreshSelected();
  }

  /** Opens the task named in the address (#task=ID), if any. */
  selectFromAddress() {
    const match = /^#task=([^&]+)$/.exec(location.hash);
    if (match === null) return;
    let id;
    try {
      id = decodeURIComponent(match[1] ?? '');
    } catch {
      return;
    }
    if (id !== '' && id !== this.selectedId) this.select(id, false);
  }

  async refreshSelected() {
    const id = this.selectedId;
    if (id === null) return;
    // A finished task no longer changes: once fetched by itself (list pages may carry less),
    // there is no need to ask for it every 2 s.
    if (this.selectedFetched && this.selected !== null && finishedStatuses.has(this.selected.status) && this.detailError === null) {
      this.closeStream();
      this.renderDetail();
      return;
    }
    try {
      const task = await this.api.getTask(id);
      if (id !== this.selectedId) return;
      this.selected = task;
      this.selectedFetched = true;
      this.detailError = null;
    } catch (error) {
      if (id !== this.selectedId) return;
      if (error instanceof ApiError && error.isAuthProblem) {
        this.onAuthProblem(error, { keepToken: false });
        return;
      }
      this.detailError = error instanceof ApiError && error.status === 404
        ? `Task ${id} is not known to the cluster (any more): finished tasks are pruned after a while.`
        : `Could not load task ${id}: ${error instanceof Error ? error.message : String(error)}`;
    }
    const task = this.selected;
    if (task !== null && finishedStatuses.has(task.status)) this.closeStream();
    else if (task !== null && this.stream === null && this.detailError === null) this.openStream(task.id);
    this.renderDetail();
  }

  /** @param {string} id */
  openStream(id) {
    const controller = new AbortController();
    this.stream = controller;
    this.streamState = 'connecting to the output stream…';
    void followEventStream(`/api/tasks/${encodeURIComponent(id)}/events`, () => this.api.authHeaders(), {
      onOpen: () => {
        if (this.stream !== controller) return;
        this.streamState = 'streaming live';
        this.renderStreamState();
      },
      onMessage: (message) => {
        if (this.stream !== controller) return;
        this.onTaskEvent(message.event, message.data);
      },
      onProblem: (problem) => {
        if (this.stream !== controller) return;
        if (problem.status === 401 || problem.status === 403) {
          this.stream = null;
          this.onAuthProblem(new ApiError(problem.status, problem.status === 401 ? 'unauthorized' : 'forbidden', problem.message), { keepToken: false });
          return;
        }
        this.streamState = problem.retryInMs === null
          ? `output stream closed: ${problem.message}`
          : `output stream interrupted (${problem.message}); reconnecting in ${duration(problem.retryInMs)}`;
        this.renderStreamState();
      },
      shouldStop: () => this.selected !== null && finishedStatuses.has(this.selected.status),
    }, controller.signal);
  }

  closeStream() {
    this.stream?.abort();
    this.stream = null;
  }

  /** Detaches the view from the server: the token is gone or being replaced. */
  stop() {
    this.closeStream();
  }

  /** @param {string} eventName @param {string} data */
  onTaskEvent(eventName, data) {
    /** @type {TaskEvent} */
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (eventName === 'error') {
      // The node broke off the stream with a reason; the stream reconnects by itself.
      const reason = /** @type {any} */ (event)?.error?.message;
      this.streamState = `the node reported a stream error: ${typeof reason === 'string' ? reason : 'no reason given'}`;
      this.renderStreamState();
      return;
    }
    const type = event && typeof event === 'object' ? event.type : eventName;
    if (type === 'output' && event.type === 'output') {
      const before = this.live.attempt;
      const result = this.live.accept(event);
      if (result === 'ignored') return;
      if (result === 'restarted') {
        this.detailNotice = `Attempt ${event.attempt} started over (attempt ${before} did not finish); its output replaces the earlier one.`;
        this.renderDetail();
        return;
      }
      // Chunks may still come after a finished status (they were produced before it); the final event follows them.
      this.appendOutput(event.text);
    } else if (type === 'status' && event.type === 'status' && this.selected !== null) {
      this.selected = {
        ...this.selected,
        status: event.status,
        attempt: event.attempt,
        assignedNode: event.node ?? this.selected.assignedNode,
        error: event.reason ?? this.selected.error,
      };
      this.renderDetail();
    } else if (type === 'final' && event.type === 'final') {
      this.selected = event.task;
      this.selectedFetched = true;
      this.closeStream();
      this.streamState = 'finished';
      this.renderDetail();
      void this.refreshList();
    }
  }

  /** Adds streamed text without redrawing, and follows the end only if the reader is there. @param {string} text */
  appendOutput(text) {
    const pre = this.output;
    const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    if (this.live.cutFront) pre.textContent = this.live.text;
    else pre.append(text);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  renderStreamState() {
    const label = this.detail.querySelector('.stream-state');
    if (label) label.textContent = this.streamState;
  }

  renderDetail() {
    const id = this.selectedId;
    if (id === null) {
      this.detail.hidden = true;
      return;
    }
    this.detail.hidden = false;
    const task = this.selected;
    this.syncOutput(task);
    // Redraw only when something shown changed: fewer repeats for screen readers, less work.
    const running = task?.attempts.some((attempt) => attempt.startedAt !== null && attempt.endedAt === null) ?? false;
    const names = task === null ? [] : [task.assignedNode, task.pinnedNode, ...task.attempts.map((attempt) => attempt.node)]
      .map((node) => (node === null ? null : this.nodesById.get(node)?.name ?? null));
    const canCancel = this.may('cancel');
    const key = JSON.stringify([id, task, names, this.detailError, this.actionError, this.detailNotice, this.streamState,
      this.live.gap, this.live.cutFront, running ? Math.floor(Date.now() / 1_000) : 0, canCancel]);
    if (key === this.detailKey && this.detail.firstChild !== null) return;
    this.detailKey = key;
    const head = h('div', { class: 'detail-head' },
      h('h3', { id: 'detail-title' }, 'Task ', h('span', { class: 'mono' }, id)),
      task === null ? null : statusBadge(task.status),
      task !== null && activeStatuses.has(task.status) && canCancel
        ? h('button', { type: 'button', class: 'danger', 'data-focus': 'task-cancel', onclick: () => void this.cancel(id) }, 'Cancel task')
        : null,
      h('button', { type: 'button', class: 'quiet', 'data-focus': 'task-close', onclick: () => this.close() }, 'Close'),
    );
    /** @type {Array<Node | null>} */
    const parts = [head];
    if (this.detailError !== null) parts.push(h('p', { class: 'inline-error', role: 'alert' }, this.detailError));
    if (this.actionError !== null) parts.push(h('p', { class: 'inline-error', role: 'alert' }, this.actionError));
    if (task === null) {
      if (this.detailError === null) parts.push(h('p', { class: 'empty' }, 'Loading…'));
      replaceKeepingFocus(this.detail, parts);
      return;
    }
    const finished = finishedStatuses.has(task.status);
    const usage = task.usage;
    parts.push(
      h('dl', null,
        h('dt', null, 'Title'), h('dd', null, task.title ?? '–'),
        h('dt', null, task.model !== null ? 'Model' : 'Capability'), h('dd', { class: 'mono' }, task.model ?? task.capability ?? '–'),
        task.model !== null && task.capability !== null ? [h('dt', null, 'Capability'), h('dd', null, task.capability)] : null,
        h('dt', null, 'Priority'), h('dd', null, String(task.priority)),
        h('dt', null, 'Node'), h('dd', null, task.assignedNode === null ? 'not assigned' : nodeLabel(task.assignedNode, this.nodesById),
          task.pinnedNode !== null ? h('span', { class: 'sub' }, ' (pinned to ', nodeLabel(task.pinnedNode, this.nodesById), ')') : null),
        h('dt', null, 'Attempt'), h('dd', null, `${task.attempt} of at most ${task.maxAttempts}`),
        task.waitingFor !== null ? [h('dt', null, 'Waiting for'), h('dd', null, task.waitingFor)] : null,
        task.notBefore !== null && !finished ? [h('dt', null, 'Retry after'), h('dd', null, dateTime(task.notBefore))] : null,
        task.dependsOn.length > 0 ? [h('dt', null, 'Depends on'), h('dd', { class: 'mono' }, task.dependsOn.join(', '))] : null,
        h('dt', null, 'Created'), h('dd', null, dateTime(task.createdAt)),
        h('dt', null, 'Started'), h('dd', null, dateTime(task.startedAt)),
        h('dt', null, 'Completed'), h('dd', null, dateTime(task.completedAt)),
        h('dt', null, 'Timeout'), h('dd', null, duration(task.timeoutMs)),
        usage !== null ? [h('dt', null, 'Usage'), h('dd', null,
          `${usage.promptTokens} prompt + ${usage.completionTokens} generated tokens, ${usage.tokensPerSecond.toFixed(1)} tok/s, load ${duration(usage.loadMs)}, total ${duration(usage.totalMs)}`)] : null,
      ),
      task.error !== null ? h('p', { class: 'inline-error' }, h('strong', null, 'Error: '), task.error) : null,
      this.detailNotice ? h('p', { class: 'hint', role: 'status' }, this.detailNotice) : null,
      h('h3', null, 'Output ', h('span', { class: 'stream-state' }, finished ? '' : this.streamState)),
      this.output,
      task.outputTruncated ? h('p', { class: 'hint' }, 'The stored output was cut at its size limit; the full text was only streamed live.') : null,
      !finished && this.live.gap ? h('p', { class: 'hint' }, 'Some output chunks were missed while reconnecting; the full output appears when the task finishes.') : null,
      this.live.cutFront && !finished ? h('p', { class: 'hint' }, 'Only the last part of a long output is kept on screen.') : null,
      task.attempts.length > 0 ? attemptsTable(task, this.nodesById) : null,
    );
    replaceKeepingFocus(this.detail, parts);
  }

  /**
   * The output box shows the stored output once the task has finished with one, else what
   * was streamed. It is kept out of the redraws so streaming text and scrolling stay put.
   * @param {Task | null} task
   */
  syncOutput(task) {
    if (task === null) return;
    let text = this.live.text;
    if (finishedStatuses.has(task.status)) {
      if (task.output !== null) text = task.output;
      else if (text === '') text = task.status === 'completed' ? '(no output)' : '(none)';
    }
    if (this.output.textContent !== text) this.output.textContent = text;
  }

  close() {
    const id = this.selectedId;
    this.closeStream();
    this.selectedId = null;
    this.selected = null;
    this.detail.hidden = true;
    history.replaceState(null, '', location.pathname + location.search);
    for (const row of this.rows.querySelectorAll('tr.selected')) row.classList.remove('selected');
    // Back to the task's row, so a keyboard user continues where they left the list.
    const button = id === null ? null : this.rows.querySelector(`[data-focus="task-${CSS.escape(id)}"]`);
    if (button instanceof HTMLElement) button.focus();
  }

  /** @param {string} id */
  async cancel(id) {
    try {
      await this.api.cancelTask(id);
      this.detailNotice = 'Cancellation requested.';
      this.actionError = null;
    } catch (error) {
      this.actionError = `Not cancelled: ${error instanceof Error ? error.message : String(error)}`;
      if (error instanceof ApiError && error.isAuthProblem) this.onAuthProblem(error, { keepToken: error.status === 403 });
    }
    this.renderDetail();
    await this.refresh();
  }

  /** Builds the POST body from the form: empty fields are left out, so the API names what is missing. */
  formBody() {
    const data = new FormData(this.form);
    /** @type {Record<string, unknown>} */
    const body = {};
    for (const name of ['model', 'capability', 'title']) {
      const value = String(data.get(name) ?? '').trim();
      if (value !== '') body[name] = value;
    }
    const prompt = String(data.get('prompt') ?? '');
    if (prompt !== '') body.prompt = prompt;
    const priority = String(data.get('priority') ?? '').trim();
    // A non-number is sent as typed, so the API's reason ("must be an integer from 0 to 10") is shown.
    if (priority !== '') body.priority = Number.isNaN(Number(priority)) ? priority : Number(priority);
    return body;
  }

  clearFormErrors() {
    this.formError.hidden = true;
    this.formError.textContent = '';
    for (const id of Object.values(formFields)) {
      const input = /** @type {HTMLElement} */ (document.getElementById(id));
      input.removeAttribute('aria-invalid');
      const message = /** @type {HTMLElement} */ (document.getElementById(`${id}-error`));
      message.hidden = true;
      message.textContent = '';
    }
  }

  async submit() {
    this.clearFormErrors();
    this.submitResult.textContent = 'Submitting…';
    this.submitButton.disabled = true;
    try {
      const task = await this.api.submitTask(/** @type {any} */ (this.formBody()));
      this.submitResult.textContent = `Submitted task ${task.id}.`;
      const prompt = /** @type {HTMLTextAreaElement} */ (document.getElementById('submit-prompt'));
      const title = /** @type {HTMLInputElement} */ (document.getElementById('submit-title-input'));
      prompt.value = '';
      title.value = '';
      this.select(task.id, false);
      void this.refreshList();
    } catch (error) {
      this.submitResult.textContent = '';
      this.showSubmitError(error);
    } finally {
      this.submitButton.disabled = false;
    }
  }

  /** @param {unknown} error */
  showSubmitError(error) {
    if (!(error instanceof ApiError)) {
      this.formError.textContent = `Not submitted: ${String(error)}`;
      this.formError.hidden = false;
      return;
    }
    if (error.isAuthProblem) this.onAuthProblem(error, { keepToken: error.status === 403 });
    const fields = fieldErrorsOf(error.details);
    /** @type {string[]} */
    const unplaced = [];
    /** @type {HTMLElement | null} */
    let first = null;
    for (const { field, reason } of fields) {
      const id = /** @type {Record<string, string>} */ (formFields)[field];
      const input = id === undefined ? null : document.getElementById(id);
      const message = id === undefined ? null : document.getElementById(`${id}-error`);
      if (input === null || message === null) {
        unplaced.push(`${field}: ${reason}`);
        continue;
      }
      // Two reasons for one field read as one sentence each.
      message.textContent = message.textContent ? `${message.textContent} ${capitalise(reason)}.` : `${capitalise(reason)}.`;
      message.hidden = false;
      input.setAttribute('aria-invalid', 'true');
      first ??= input;
    }
    if (fields.length === 0 || unplaced.length > 0) {
      const retry = error.retryAfterSeconds !== null ? ` Try again in ${error.retryAfterSeconds} s.` : '';
      const sentence = /[.!?]$/.test(error.message) ? error.message : `${error.message}.`;
      this.formError.textContent = fields.length === 0 ? `Not submitted: ${sentence}${retry}` : `Not submitted: ${unplaced.join('; ')}`;
      this.formError.hidden = false;
    } else {
      this.formError.textContent = 'Not submitted: correct the fields marked below.';
      this.formError.hidden = false;
    }
    first?.focus();
  }
}

/** How long ago a task was created; the leader's clock may run a little ahead of this browser's. @param {number} ms */
function age(ms) {
  return ms < 1_000 ? '< 1 s' : duration(ms);
}

/**
 * A shortened id as its two ends, so a phone can stack them and leave the title column the
 * width (app.css, .id-part).
 * @param {string} short from shortId
 */
function idParts(short) {
  const cut = short.indexOf('…');
  if (cut < 0) return [short];
  return [h('span', { class: 'id-part' }, short.slice(0, cut + 1)), h('span', { class: 'id-part' }, short.slice(cut + 1))];
}

/** @param {string} text */
function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** @param {string} status */
export function statusBadge(status) {
  const symbol = /** @type {Record<string, string>} */ (statusSymbols)[status] ?? '?';
  return h('span', { class: `badge status-${status}` }, `${symbol} ${status}`);
}

/** @param {Task} task @param {Map<string, NodeStatus>} nodesById */
function attemptsTable(task, nodesById) {
  return h('div', { class: 'table-wrap' },
    h('h3', null, 'Attempts'),
    h('table', { class: 'attempts' },
      h('thead', null, h('tr', null, ['#', 'Node', 'Model', 'Status', 'Term', 'Assigned', 'Ran for', 'Error'].map((name) => h('th', { scope: 'col' }, name)))),
      h('tbody', null, task.attempts.map((attempt) => h('tr', null,
        h('td', null, String(attempt.attempt)),
        h('td', null, nodeLabel(attempt.node, nodesById)),
        h('td', { class: 'mono' }, attempt.model ?? '–'),
        h('td', null, attempt.status),
        h('td', null, String(attempt.term)),
        h('td', null, dateTime(attempt.assignedAt)),
        h('td', null, attempt.startedAt === null ? '–' : duration((attempt.endedAt ?? Date.now()) - attempt.startedAt)),
        h('td', null, attempt.error ?? '')))),
    ));
}

