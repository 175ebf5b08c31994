// Task commands: submit (with --wait or --follow), tasks, task, cancel, assign.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { AgentsStatus } from '../../../protocol/api.ts';
import * as limits from '../../../protocol/limits.ts';
import type { Task, TaskEvent, TaskList } from '../../../protocol/tasks.ts';
import { missingOnLiveNodes } from '../../../scheduler/tasks/node-view.ts';
import { CliError, DaemonUnreachableError, type ApiClient, type ApiResponse } from '../client.ts';
import { ago, cut, nodeNamer, table, withNodeNames, type NodeNamer } from '../format.ts';
import { fetchNodeNamer } from './status.ts';

export interface SubmitFlags {
  model?: string | undefined;
  capability?: string | undefined;
  wait?: boolean | undefined;
  follow?: boolean | undefined;
  priority?: string | undefined;
  title?: string | undefined;
  system?: string | undefined;
  'depends-on'?: string[] | undefined;
  'timeout-ms'?: string | undefined;
  'max-attempts'?: string | undefined;
  'idempotency-key'?: string | undefined;
  json?: boolean | undefined;
}

/**
 * A whole-number flag in `min..max` (the range its help gives), checked before anything is
 * sent: a wrong value is wrong usage (exit 2), not something for a daemon to refuse.
 */
function integerFlag(command: string, name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const number = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(number >= min && number <= max)) {
    throw new CliError(`--${name} must be a whole number in ${min}..${max}, got "${value}". Run \`hivemesh ${command} --help\` for its flags.`, 2);
  }
  return number;
}

export async function submitCommand(client: ApiClient, flags: SubmitFlags, words: string[]): Promise<number> {
  if (flags.model === undefined && flags.capability === undefined) throw new CliError('submit needs --model M or --capability C (see `hivemesh nodes` for what the cluster has)', 2);
  if (flags.wait === true && flags.follow === true) throw new CliError('use --wait or --follow, not both', 2);
  const priority = integerFlag('submit', 'priority', flags.priority, limits.taskPriorityMin, limits.taskPriorityMax);
  const timeoutMs = integerFlag('submit', 'timeout-ms', flags['timeout-ms'], limits.taskTimeoutMsMin, limits.taskTimeoutMsMax);
  const maxAttempts = integerFlag('submit', 'max-attempts', flags['max-attempts'], 1, limits.taskMaxAttemptsMax);
  let prompt = words.join(' ');
  if (prompt === '-' || (prompt === '' && !process.stdin.isTTY)) prompt = readFileSync(0, 'utf8');
  if (prompt.trim() === '') throw new CliError('submit needs a prompt: hivemesh submit --model M "your prompt" (or - to read it from stdin)', 2);
  const body: Record<string, unknown> = { prompt };
  if (flags.model !== undefined) body.model = flags.model;
  if (flags.capability !== undefined) body.capability = flags.capability;
  if (priority !== undefined) body.priority = priority;
  if (flags.title !== undefined) body.title = flags.title;
  if (flags.system !== undefined) body.system = flags.system;
  if (flags['depends-on'] !== undefined && flags['depends-on'].length > 0) body.dependsOn = flags['depends-on'];
  if (timeoutMs !== undefined) body.timeoutMs = timeoutMs;
  if (maxAttempts !== undefined) body.maxAttempts = maxAttempts;
  // With a key of our own, a submit that met a leader election (503) is retried safely: the
  // same key and body give the same task, never a second one.
  body.idempotencyKey = flags['idempotency-key'] ?? `cli-${randomUUID()}`;

  const nameOf = await warnIfNobodyCanRun(client, flags);
  const task = await submitRetrying(client, body);
  if (flags.wait !== true && flags.follow !== true) {
    process.stdout.write(flags.json === true ? `${JSON.stringify(task, null, 2)}\n` : `${task.id}\n`);
    return 0;
  }
  process.stderr.write(`task ${task.id} submitted\n`);
  return followTask(client, task.id, flags.follow === true, flags.json === true, nameOf);
}

/** Retries of a submit answered 503 (no leader for a moment), and the longest wait between two. */
export const submitRetries = 5;
const submitRetryWaitMsMax = 3_000;

/**
 * POST /api/tasks, tried again while it is answered 503 (no leader or quorum for a moment).
 * The body carries an idempotency key, so a retry never makes a second task; once the
 * retries are spent, the error gives the key. Only a 503 no_leader says the write reached
 * no leader (so was not committed); any other 503 (no_quorum: a leader took it but could
 * not confirm it) leaves the outcome unknown, which a re-run with the same key settles.
 */
async function submitRetrying(client: ApiClient, body: Record<string, unknown>): Promise<Task> {
  const startedAt = Date.now();
  let everyAnswerNoLeader = true;
  for (let retry = 0; ; retry += 1) {
    let response: ApiResponse<Task>;
    try {
      response = await client.request<Task>('POST', '/api/tasks', body, { accept: [503] });
    } catch (error) {
      // No answer, but the submit may have reached the daemon (its connection broke or timed
      // out: the daemon or its leader died mid-write), or an earlier try reached a leader
      // that could not confirm it: the task may exist, and a re-run with a new key would
      // make a second one. Say so, with the key that cannot.
      if (!(error instanceof DaemonUnreachableError) || (!error.maybeSent && (retry === 0 || everyAnswerNoLeader))) throw error;
      const what = error.maybeSent
        ? `the daemon at ${client.url} gave no answer to the submit (${error.network}: the connection broke or timed out)`
        : `after ${retry} tries answered 503, the daemon at ${client.url} stopped answering (${error.network})`;
      throw new CliError(`error: ${what}. The task may or may not have been created. Run the same command again with --idempotency-key ${String(body.idempotencyKey)} `
        + '(add --url http://OTHER-NODE:7420 if this daemon is down): that key returns the task if it exists and creates it only if it does not, never twice.');
    }
    if (response.status !== 503) return response.body;
    const reason = (response.body as unknown as { error?: { code?: string; message?: string } } | string | null);
    const error = typeof reason === 'object' && reason !== null ? reason.error : undefined;
    const message = error?.message ?? 'HTTP 503';
    if (error?.code !== 'no_leader') everyAnswerNoLeader = false;
    if (retry >= submitRetries) {
      const seconds = Math.round((Date.now() - startedAt) / 1_000);
      const key = String(body.idempotencyKey);
      const outcome = everyAnswerNoLeader
        ? 'The task was not created: no answer came from a leader (each was no_leader). '
          + `Run the same command again once the cluster has a leader; --idempotency-key ${key} still works and creates the task once.`
        : `The task may or may not have been created. Run the same command again with --idempotency-key ${key}: `
          + 'that key returns the task if it exists and creates it only if it does not, never twice.';
      throw new CliError(`error: gave up after ${retry + 1} tries in ${seconds} s, each answered 503 (last: ${message}). ${outcome} \`hivemesh status\` shows whether the cluster has a leader.`);
    }
    const waitMs = Math.min(submitRetryWaitMsMax, 1_000 * Math.max(1, Number(response.headers.get('retry-after') ?? 1) || 1));
    process.stderr.write(`no leader right now (${message}); retrying in ${waitMs / 1000} s\n`);
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}

/**
 * Warns when no live node can run the task, and gives the node namer for --follow's status
 * lines, from the one read of the node list (short ids when it fails: both are courtesies;
 * the submit itself reports real problems).
 */
async function warnIfNobodyCanRun(client: ApiClient, flags: SubmitFlags): Promise<NodeNamer> {
  try {
    const { nodes } = await client.get<AgentsStatus>('/api/status/agents');
    const missing = missingOnLiveNodes(nodes, flags);
    if (missing === 'model') process.stderr.write(`warning: no live node has model "${flags.model}"; the task will wait until one does (\`hivemesh nodes\` lists the models)\n`);
    if (missing === 'capability') process.stderr.write(`warning: no live node offers capability "${flags.capability}"; the task will wait until one does\n`);
    return nodeNamer(nodes);
  } catch (error) {
    // A daemon that let this read time out would let the submit time out too: say so now,
    // with nothing sent, rather than after a second 30 s and with the outcome unknown.
    if (error instanceof DaemonUnreachableError && error.network === 'TimeoutError') throw new CliError(`error: ${error.message} Nothing was submitted.`);
    return nodeNamer(null);
  }
}

export async function followTask(client: ApiClient, id: string, printOutput: boolean, json: boolean, nameOf: NodeNamer): Promise<number> {
  let final: Task | null = null;
  let printedSequence = -1;
  let printedAttempt = 0;
  // On a terminal the text streams to stdout and status lines to stderr; they share the
  // screen, so a status line after output that did not end its line starts on a new one
  // (that line break goes to stderr). Redirected to a file or a pipe, stdout gets exactly the
  // final answer once the task ends (a retried attempt starts its text over, which a file
  // cannot take back) and the live text goes to stderr. With --json, stdout holds only the
  // final task as JSON and the text streams to stderr.
  const liveToStdout = !json && process.stdout.isTTY === true;
  const textOut = liveToStdout ? process.stdout : process.stderr;
  let midLine = false;
  let textOpen = false;
  const breakLine = () => {
    if (midLine) process.stderr.write('\n');
    // The text's line is ended now where the text is (on stderr, or on the terminal a TTY
    // stdout shares with a TTY stderr): the end of the command must not end it a second time.
    // With stderr elsewhere (2>/dev/null) the text's line is still open and gets its break.
    if (midLine && (textOut === process.stderr || process.stderr.isTTY === true)) textOpen = false;
    midLine = false;
  };
  const startsOver = (attempt: number) => {
    breakLine();
    process.stderr.write(`[attempt ${attempt} on another node; output starts over]\n`);
  };
  try {
    for await (const { data } of client.events(`/api/tasks/${encodeURIComponent(id)}/events`)) {
      const event = data as TaskEvent;
      if (event.type === 'output' && printOutput) {
        if (event.attempt !== printedAttempt) {
          if (printedAttempt !== 0) startsOver(event.attempt);
          printedAttempt = event.attempt;
          printedSequence = -1;
        }
        if (event.sequence > printedSequence && event.text !== '') {
          textOut.write(event.text);
          midLine = !event.text.endsWith('\n');
          textOpen = midLine;
          printedSequence = event.sequence;
        }
      } else if (event.type === 'status') {
        if (printOutput) {
          breakLine();
          const on = event.node === null ? '' : ` on ${nameOf(event.node)}`;
          const reason = event.reason === null ? '' : `: ${withNodeNames(event.reason, nameOf)}`;
          process.stderr.write(`[${event.status}${on}${reason}]\n`);
        }
      } else if (event.type === 'final') {
        final = event.task;
        break;
      }
    }
  } catch (error) {
    if (error instanceof CliError && !(error instanceof DaemonUnreachableError)) throw error;
    // The daemon went away mid-stream or before the stream opened (killed, restarted,
    // network): the task does not.
    breakLine();
    throw new CliError(`lost the connection to the daemon at ${client.url} while following task ${id} (${error instanceof DaemonUnreachableError ? error.network : (error as Error).message}); the task goes on in the cluster: \`hivemesh task ${id}\` shows it (add --url http://OTHER-NODE:7420 if this daemon is down)`);
  }
  if (final === null) {
    // The daemon ended the stream before the task's end: it is stopping (a stop ends its
    // streams), or it dropped a watcher that fell too far behind.
    breakLine();
    throw new CliError(`the daemon at ${client.url} ended the event stream of task ${id} before the task finished (it may be stopping); the task goes on in the cluster: \`hivemesh task ${id}\` shows it (add --url http://OTHER-NODE:7420 if this daemon is down)`);
  }
  if (liveToStdout && printOutput && printedAttempt !== final.attempt && (final.output ?? '') !== '') {
    // None of the final attempt's output reached us live (the stream waits for it only so
    // long): the stored output is the answer.
    if (printedAttempt !== 0) startsOver(final.attempt);
    else breakLine();
    textOut.write(final.output!);
    textOpen = !final.output!.endsWith('\n');
  }
  if (textOpen) textOut.write('\n');
  if (json) process.stdout.write(`${JSON.stringify(final, null, 2)}\n`);
  else if (!printOutput || !liveToStdout) process.stdout.write(`${final.output ?? ''}\n`);
  if (final.status !== 'completed') {
    process.stderr.write(`task ${id} ${final.status}${final.error === null ? '' : `: ${final.error}`}\n`);
    return 1;
  }
  return 0;
}

/** The widest NOTE of `hivemesh tasks` when stdout is not a terminal (a file, a pipe). */
const noteWidthPipedMax = 100;
/**
 * The NOTE keeps at least this much on a narrow terminal (the line wraps): most reasons a
 * task waits fit, and a cut one says little.
 */
const noteWidthMin = 40;
/** A title cut to make room for the reason a task waits keeps at least this much. */
const noteTitleWidthMin = 12;

/**
 * The NOTE of a task: its title and, for a queued task, why it waits (`title — waits:
 * reason`); else its title or error. Peer ids in the daemon's texts become node names.
 * When it must be cut to `width`, the title gives way to the reason: cut, then left out.
 */
function noteOf(task: Task, nameOf: (id: string) => string, width: number): string {
  const reason = task.waitingFor === null ? null : withNodeNames(task.waitingFor, nameOf);
  if (reason === null) return cut(task.title ?? (task.error === null ? '' : withNodeNames(task.error, nameOf)), width);
  if (task.title === null) return cut(reason, width);
  const joint = ' — waits: ';
  const titleWidth = width - joint.length - reason.length;
  if (titleWidth < Math.min(noteTitleWidthMin, task.title.length)) return cut(reason, width);
  return `${cut(task.title, titleWidth)}${joint}${reason}`;
}

export interface TasksFlags {
  status?: string | undefined;
  limit?: string | undefined;
  cursor?: string | undefined;
  json?: boolean | undefined;
}

export async function tasksCommand(client: ApiClient, flags: TasksFlags): Promise<string> {
  integerFlag('tasks', 'limit', flags.limit, 1, limits.listLimitMax);
  if (flags.status !== undefined) {
    // The statuses live in a TypeBox module (about 0.1 s to load): only when --status is given.
    const { taskStatuses } = await import('../../../protocol/tasks.ts');
    if (!(taskStatuses as readonly string[]).includes(flags.status)) {
      throw new CliError(`--status must be one of ${taskStatuses.join('|')}, got "${flags.status}". Run \`hivemesh tasks --help\` for its flags.`, 2);
    }
  }
  // A cursor is the number a previous page's "more:" line gives; anything else is a typo.
  if (flags.cursor !== undefined && !/^\d+$/.test(flags.cursor)) {
    throw new CliError(`--cursor must be the C of a previous page's "more: hivemesh tasks --cursor C" line, got "${flags.cursor}". Run \`hivemesh tasks --help\` for its flags.`, 2);
  }
  const query = new URLSearchParams();
  if (flags.status !== undefined) query.set('status', flags.status);
  if (flags.limit !== undefined) query.set('limit', flags.limit);
  if (flags.cursor !== undefined) query.set('cursor', flags.cursor);
  const path = `/api/tasks${query.size > 0 ? `?${query}` : ''}`;
  if (flags.json === true) return JSON.stringify(await client.get<TaskList>(path), null, 2);
  const [page, nameOf] = await Promise.all([client.get<TaskList>(path), fetchNodeNamer(client)]);
  const now = Date.now();
  const headers = ['ID', 'STATUS', 'MODEL', 'PRI', 'NODE', 'TRY', 'CREATED', 'NOTE'];
  const rows: Array<Array<string | number>> = page.tasks.map((task) => [
    task.id, task.status, task.model ?? `cap:${task.capability}`, task.priority, nameOf(task.assignedNode), task.attempt,
    ago(Math.max(0, now - task.createdAt)),
  ]);
  // On a terminal, the NOTE gets the room the other columns leave on the line.
  const otherColumnsWidth = headers.slice(0, -1).reduce((sum, header, column) => sum + 2 + Math.max(header.length, ...rows.map((row) => String(row[column]).length)), 0);
  const noteWidth = process.stdout.isTTY === true && process.stdout.columns > 0
    ? Math.max(noteWidthMin, process.stdout.columns - otherColumnsWidth)
    : noteWidthPipedMax;
  page.tasks.forEach((task, index) => rows[index]!.push(noteOf(task, nameOf, noteWidth)));
  const lines = [table(headers, rows)];
  if (page.nextCursor !== null) lines.push(`more: hivemesh tasks --cursor ${page.nextCursor}${flags.status === undefined ? '' : ` --status ${flags.status}`}${flags.limit === undefined ? '' : ` --limit ${flags.limit}`}`);
  return lines.join('\n');
}

export async function taskCommand(client: ApiClient, id: string, json: boolean): Promise<string> {
  const path = `/api/tasks/${encodeURIComponent(id)}`;
  if (json) return JSON.stringify(await client.get<Task>(path), null, 2);
  const [task, nameOf] = await Promise.all([client.get<Task>(path), fetchNodeNamer(client)]);
  const named = (text: string) => withNodeNames(text, nameOf);
  const lines = [
    `id          ${task.id}${task.title === null ? '' : `  (${task.title})`}`,
    `status      ${task.status}${task.waitingFor === null ? '' : `, waiting: ${named(task.waitingFor)}`}`,
    `model       ${task.model ?? '-'}   capability ${task.capability ?? '-'}   priority ${task.priority}`,
    `node        ${nameOf(task.assignedNode)}${task.pinnedNode === null ? '' : `   pinned to ${nameOf(task.pinnedNode)}`}`,
    `attempt     ${task.attempt} of at most ${task.maxAttempts}`,
    `created     ${new Date(task.createdAt).toISOString()}${task.startedAt === null ? '' : `   started ${new Date(task.startedAt).toISOString()}`}${task.completedAt === null ? '' : `   finished ${new Date(task.completedAt).toISOString()}`}`,
  ];
  if (task.usage !== null) lines.push(`usage       ${task.usage.promptTokens} prompt + ${task.usage.completionTokens} generated tokens, ${task.usage.tokensPerSecond.toFixed(1)} tokens/s, load ${task.usage.loadMs} ms`);
  if (task.dependsOn.length > 0) lines.push(`depends on  ${task.dependsOn.join(', ')}`);
  for (const attempt of task.attempts) lines.push(`  attempt ${attempt.attempt}: ${attempt.status} on ${nameOf(attempt.node)}${attempt.error === null ? '' : ` (${named(attempt.error)})`}`);
  if (task.error !== null) lines.push(`error       ${named(task.error)}`);
  if (task.output !== null) lines.push('', task.output + (task.outputTruncated ? '\n[output truncated]' : ''));
  return lines.join('\n');
}

export async function cancelCommand(client: ApiClient, id: string, json: boolean): Promise<string> {
  const { body: task } = await client.request<Task>('DELETE', `/api/tasks/${encodeURIComponent(id)}`);
  return json ? JSON.stringify(task, null, 2) : `task ${task.id} ${task.status}`;
}

/** Where to look next when a pin cannot run (yet), by why. */
function pinHint(waitingFor: string): string {
  if (waitingFor.includes('which is not alive')) return '`hivemesh nodes` shows its state';
  if (waitingFor.includes('which lacks')) return '`hivemesh nodes` lists each node\'s models';
  return '`hivemesh nodes` lists the nodes';
}

export async function assignCommand(client: ApiClient, id: string, node: string, json: boolean): Promise<string> {
  const [response, nameOf] = await Promise.all([
    client.request<Task>('PUT', `/api/tasks/${encodeURIComponent(id)}/assign`, { node }, { accept: [400] }),
    json ? null : fetchNodeNamer(client),
  ]);
  if (response.status === 400) {
    // The daemon names the field (`node: no node "x" is known`); here NODE is the command's
    // own word, and `error: node: no node` would say node twice.
    const message = (response.body as unknown as { error?: { message?: string } } | null)?.error?.message ?? 'HTTP 400';
    throw new CliError(`error: ${message.replace(/^node: /, '')}`);
  }
  const task = response.body;
  // Pinned where it cannot run (yet): the task waits; say so, as submit does for a missing model.
  if (task.waitingFor !== null && task.waitingFor.startsWith('pinned to')) {
    const reason = nameOf === null ? task.waitingFor : withNodeNames(task.waitingFor, nameOf);
    process.stderr.write(`warning: the task is ${reason}; it waits until that changes (${pinHint(task.waitingFor)})\n`);
  }
  return nameOf === null ? JSON.stringify(task, null, 2) : `task ${task.id} pinned to ${nameOf(task.pinnedNode)}`;
}
