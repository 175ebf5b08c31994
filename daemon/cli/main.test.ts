// The CLI's entry: --help on a client command (or `help <command>`) prints that command's
// own help and succeeds; unknown commands fail with a pointer to the usage.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as limits from '../../protocol/limits.ts';
import { taskStatuses } from '../../protocol/tasks.ts';
import { roles } from '../../protocol/tokens.ts';
import { ApiClient, CliError } from './client.ts';
import { followTask, submitRetries } from './commands/tasks.ts';
import { nodeNamer } from './format.ts';
import { main } from './main.ts';

afterEach(() => {
  vi.restoreAllMocks();
});

function captureStdout(): () => string {
  const chunks: string[] = [];
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  });
  return () => chunks.join('');
}


/**
 * A fake daemon for submit: each POST's idempotency key is recorded and answered with
 * `answer(count)` (503s with Retry-After 1), or, for null, its connection dropped unanswered;
 * other requests get an empty node list.
 */
async function submitServer(answer: (count: number) => { status: number; body: unknown } | null) {
  const keys: string[] = [];
  const server = http.createServer((request, response) => {
    if (request.method !== 'POST') {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ nodes: [] }));
      return;
    }
    let text = '';
    request.on('data', (chunk: Buffer) => { text += chunk.toString(); });
    request.on('end', () => {
      keys.push((JSON.parse(text) as { idempotencyKey: string }).idempotencyKey);
      const answered = answer(keys.length);
      if (answered === null) {
        request.socket.destroy();
        return;
      }
      const { status, body } = answered;
      response.writeHead(status, { 'content-type': 'application/json', ...(status === 503 ? { 'retry-after': '1' } : {}) }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { keys, server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/**
 * A fake daemon for submit --follow/--wait: a POST is answered 201 with `task`, the task's
 * event stream by `events`, anything else with `nodes` (none by default).
 */
async function followServer(task: object, events: (request: http.IncomingMessage, response: http.ServerResponse) => void, nodes: unknown[] = []) {
  const server = http.createServer((request, response) => {
    if (request.method === 'POST') {
      response.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify(task));
    } else if (request.url?.endsWith('/events')) {
      events(request, response);
    } else {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ nodes }));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** Every request a fake daemon got, as `METHOD /path`. */
interface FakeDaemon {
  requests: string[];
  url: string;
  close(): Promise<void>;
}

/** A fake daemon answering each request with `answer(method, path)` as JSON. */
async function fakeDaemon(answer: (method: string, path: string) => { status: number; body: unknown }): Promise<FakeDaemon> {
  const requests: string[] = [];
  const server = http.createServer((request, response) => {
    const method = request.method ?? 'GET';
    const path = request.url ?? '/';
    requests.push(`${method} ${path}`);
    request.resume();
    request.on('end', () => {
      const { status, body } = answer(method, path);
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    requests,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => { server.close(() => resolve()); }),
  };
}

/** A peer id of the shape libp2p gives an Ed25519 key: 12D3KooW and 44 base58 characters. */
const peerId = (tail: string): string => `12D3KooW${tail.padStart(44, 'x')}`;
const st1 = peerId('GeaESf');
const st2 = peerId('Hb7Ukq');
const st3 = peerId('Mn2pQr');
const st3Old = peerId('Zz9aaa');
/** The node list of GET /api/status/agents, cut to what naming needs. */
const clusterNodes = { nodes: [{ id: st1, name: 'st1' }, { id: st2, name: 'st2' }, { id: st3, name: 'st3' }, { id: st3Old, name: 'st3' }] };

/** A task as GET /api/tasks/:id gives it, with `fields` changed. */
function taskView(fields: Record<string, unknown>): Record<string, unknown> {
  return {
    id: 't_1', status: 'queued', title: null, model: 'llama3.2:3b', capability: null, priority: 5, assignedNode: null, pinnedNode: null,
    attempt: 0, maxAttempts: 3, createdAt: Date.now() - 5_000, startedAt: null, completedAt: null, usage: null, dependsOn: [], attempts: [],
    error: null, output: null, outputTruncated: false, waitingFor: null, ...fields,
  };
}

/** What `main(argv)` throws, or null when it returns. */
async function failureOf(argv: string[]): Promise<CliError | null> {
  const error = await main(argv).then(() => null, (caught: unknown) => caught);
  if (error !== null && !(error instanceof CliError)) throw error as Error;
  return error;
}

/**
 * Each argv (with a fake daemon's --url and --token added) is wrong usage: exit 2, a message
 * containing `message` and the command's --help pointer, and no request sent.
 */
async function expectUsageErrors(cases: ReadonlyArray<readonly [readonly string[], string]>): Promise<void> {
  const daemon = await fakeDaemon(() => ({ status: 500, body: {} }));
  const flags = ['--url', daemon.url, '--token', 'x'];
  try {
    for (const [argv, message] of cases) {
      const error = await failureOf([...argv, ...flags]);
      expect([argv.join(' '), error?.exitCode]).toEqual([argv.join(' '), 2]);
      expect(error?.message).toContain(message);
      expect(error?.message).toContain(`Run \`hivemesh ${argv[0]} --help\``);
    }
    expect(daemon.requests).toEqual([]);
  } finally {
    await daemon.close();
  }
}

describe('hivemesh CLI', () => {
  it('prints the general usage for `hivemesh`, `hivemesh help` and `hivemesh --help`', async () => {
    for (const [argv, code] of [[[], 2], [['help'], 0], [['--help'], 0], [['-h'], 0], [['help', '--help'], 0]] as const) {
      const output = captureStdout();
      await expect(main([...argv])).resolves.toBe(code);
      expect(output()).toMatch(/hivemesh submit \[--model M \| --capability C\][\s\S]*hivemesh token create --role admin\|operator\|viewer/);
      expect(output()).toContain("Run `hivemesh <command> --help` for one command's flags.");
      vi.restoreAllMocks();
    }
  });

  describe('help of one command', () => {
    // Each client command's own flags, written out here rather than read from help.ts so the
    // test fails when the help and this list disagree.
    const ownFlags: Record<string, string[]> = {
      status: [],
      nodes: [],
      submit: ['--model', '--capability', '--wait', '--follow', '--priority', '--title', '--system', '--depends-on', '--timeout-ms', '--max-attempts', '--idempotency-key'],
      tasks: ['--status', '--limit', '--cursor'],
      task: [],
      cancel: [],
      assign: [],
      token: ['--role', '--name'],
      version: [],
    };
    const daemonFlags = ['--url', '--token', '--data-dir'];
    const allFlags = [...new Set([...Object.values(ownFlags).flat(), ...daemonFlags])];
    const mentions = (text: string, flag: string) => new RegExp(`(^|[^\\w-])${flag}(?![\\w-])`, 'm').test(text);

    async function helpOf(argv: string[]): Promise<string> {
      const output = captureStdout();
      await expect(main(argv)).resolves.toBe(0);
      const text = output();
      vi.restoreAllMocks();
      return text;
    }

    it.each(Object.keys(ownFlags))('%s --help names its own flags and no other command\'s, and prints the same for -h and `help <command>`', async (command) => {
      const text = await helpOf([command, '--help']);
      expect(text.startsWith(`hivemesh ${command}: `)).toBe(true);
      expect(text).toMatch(new RegExp(`^Usage:\n  hivemesh ${command}\\b`, 'm'));
      expect(text).toMatch(new RegExp(`^Examples?:\n.*hivemesh ${command}\\b`, 'm'));
      expect(text).not.toContain('run LLM agents across the GPU machines'); // not the general usage
      const expected = command === 'version' ? ownFlags[command]! : [...ownFlags[command]!, ...daemonFlags];
      for (const flag of allFlags) expect([flag, mentions(text, flag)]).toEqual([flag, expected.includes(flag)]);
      expect(mentions(text, '--json')).toBe(true);
      expect(await helpOf([command, '-h'])).toBe(text);
      expect(await helpOf(['help', command])).toBe(text);
    });

    it.each(Object.keys(ownFlags).filter((command) => command !== 'version'))('%s accepts every flag its help lists, and refuses the flags of other commands', async (command) => {
      const text = await helpOf(['help', command]);
      const listed = [...text.matchAll(/^ {2}(?:-h, )?(--[a-z-]+)( [A-Z]+)?/gm)].map((match) => ({ flag: match[1]!, takesValue: match[2] !== undefined }));
      expect(listed.map(({ flag }) => flag).sort()).toEqual([...ownFlags[command]!, ...daemonFlags, '--json', '--help'].sort());
      // Parsing comes before contacting anything: a bad --url is the first complaint once every flag is accepted.
      const args = listed.filter(({ flag }) => flag !== '--help' && flag !== '--url').flatMap(({ flag, takesValue }) => (takesValue ? [flag, '1'] : [flag]));
      // The words each command takes (more are refused as wrong usage).
      const words = ({ task: ['ID'], cancel: ['ID'], assign: ['ID', 'NODE'], token: ['list'], submit: ['PROMPT'] } as Record<string, string[]>)[command] ?? [];
      await expect(main([command, ...args, '--url', 'notaurl', ...words])).rejects.toThrow(/is not an http\(s\) URL/);
      for (const flag of allFlags.filter((other) => !ownFlags[command]!.includes(other) && !daemonFlags.includes(other))) {
        await expect(main([command, flag, '1', '--url', 'notaurl'])).rejects.toThrow(new RegExp(`Unknown option '${flag}'[\\s\\S]*hivemesh ${command} --help`));
      }
    });

    it('says what the values of the flags may be, from the protocol', async () => {
      // Lines are wrapped where they happen to be long; the checks read the words.
      const flat = (text: string) => text.replace(/\s+/g, ' ');
      const submit = flat(await helpOf(['submit', '--help']));
      expect(submit).toMatch(new RegExp(`--priority N +${limits.taskPriorityMin}\\.\\.${limits.taskPriorityMax}, higher runs first \\(default ${limits.taskPriorityDefault}\\)`));
      expect(submit).toContain(`${limits.taskTimeoutMsMin}..${limits.taskTimeoutMsMax} ms`);
      expect(submit).toContain(`1..${limits.taskMaxAttemptsMax} (default ${limits.taskMaxAttemptsDefault})`);
      expect(submit).toContain('`-` reads it from stdin');
      expect(submit).toMatch(/--wait .*Not with --follow/s);
      expect(submit).toMatch(/At least one of --model and --capability/);
      const tasks = flat(await helpOf(['tasks', '--help']));
      expect(tasks).toContain(`only tasks in this status: ${taskStatuses.join('|')}`);
      expect(tasks).toContain(`1..${limits.listLimitMax} (default ${limits.listLimitDefault})`);
      const tokenText = await helpOf(['help', 'token']);
      const token = flat(tokenText);
      expect(token).toContain(`--role ROLE for create: ${roles.join('|')}`);
      expect(tokenText).toMatch(/hivemesh token create --role ROLE --name NAME\n {2}hivemesh token list\n {2}hivemesh token revoke ID/);
      expect(token).toContain('Needs a token that may manage tokens (admin).');
    });

    it('fails, naming the commands, for the help of a command that does not exist', async () => {
      for (const argv of [['help', 'nope'], ['nope', '--help']]) {
        const error = await main(argv).then(() => null, (caught: unknown) => caught);
        expect(error).toBeInstanceOf(CliError);
        expect((error as CliError).exitCode).toBe(2);
        expect((error as CliError).message).toBe('no command "nope"; the commands are start, status, nodes, submit, tasks, task, cancel, assign, token, version. Run `hivemesh --help` for the usage.');
      }
    });

    it('leaves start its own help, also as `help start`', async () => {
      const text = await helpOf(['help', 'start']);
      expect(text.startsWith('hivemesh start: run the daemon on this machine')).toBe(true);
      expect(text).toContain('--api-port P');
      expect(await helpOf(['start', '--help'])).toBe(text);
    });

    it('takes --help after `--` as a word of the prompt, not as a request for help', async () => {
      await expect(main(['submit', '--url', 'notaurl', '--model', 'm', '--', '--help'])).rejects.toThrow(/is not an http\(s\) URL/);
    });
  });

  it('refuses a --url that is not an http(s) URL before contacting anything', async () => {
    await expect(main(['status', '--url', 'notaurl'])).rejects.toThrow(/--url "notaurl" is not an http\(s\) URL/);
    await expect(main(['tasks', '--url', 'ftp://host'])).rejects.toThrow(/is not an http\(s\) URL/);
  });

  it('says the connection was lost, and that the task goes on, when the daemon dies during --follow', async () => {
    // A daemon that answers the submit, starts the task's event stream, then dies mid-stream.
    const task = { id: 't_lost1', status: 'queued', attempt: 0 };
    const { server, url } = await followServer(task, (request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(`event: status\ndata: ${JSON.stringify({ type: 'status', taskId: task.id, status: 'running', attempt: 1, node: 'n2', at: 1, reason: null })}\n\n`);
      setTimeout(() => request.socket.destroy(), 50);
    }, [{ id: 'n2', name: 'gpu-box' }]);
    const stderr: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => stderr.push(String(chunk)) > 0);
    try {
      for (const mode of ['--follow', '--wait']) {
        await expect(main(['submit', '--url', url, '--token', 'x', '--model', 'm', mode, 'hello'])).rejects.toThrow(
          /lost the connection to the daemon at http:\/\/127\.0\.0\.1:\d+ while following task t_lost1 .*the task goes on in the cluster: `hivemesh task t_lost1`/,
        );
      }
      // --follow's status lines name the node, as the rest of the CLI does.
      expect(stderr).toContain('[running on gpu-box]\n');
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('ends --follow\'s streamed text with one line break, not a blank line after the last status line', async () => {
    const task = { id: 't_lines1', status: 'queued', attempt: 0 };
    const final = { ...task, status: 'completed', attempt: 1, output: 'hello there', error: null };
    const event = (name: string, data: unknown) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
    const { server, url } = await followServer(task, (request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end([
        event('output', { type: 'output', taskId: task.id, attempt: 1, sequence: 0, text: 'hello there' }),
        event('status', { type: 'status', taskId: task.id, status: 'completed', attempt: 1, node: 'n2', at: 1, reason: null }),
        event('final', { type: 'final', task: final }),
      ].join(''));
    }, [{ id: 'n2', name: 'gpu-box' }]);
    const stderr: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => stderr.push(String(chunk)) > 0);
    const stdout = captureStdout();
    try {
      await expect(main(['submit', '--url', url, '--token', 'x', '--model', 'm', '--follow', 'hello'])).resolves.toBe(0);
      // Not a terminal here: the live text goes to stderr, the final answer to stdout.
      expect(stderr.filter((line) => !line.startsWith('warning:')).join('')).toBe('task t_lines1 submitted\nhello there\n[completed on gpu-box]\n');
      expect(stdout()).toBe('hello there\n');
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('says the task goes on, on a fresh line, when the daemon ends --follow\'s stream before the task\'s end (a stopping node)', async () => {
    const task = { id: 't_ended1', status: 'queued', attempt: 0 };
    const { server, url } = await followServer(task, (request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end(`event: output\ndata: ${JSON.stringify({ type: 'output', taskId: task.id, attempt: 1, sequence: 0, text: 'partial' })}\n\n`);
    });
    const stderr: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => stderr.push(String(chunk)) > 0);
    try {
      await expect(main(['submit', '--url', url, '--token', 'x', '--model', 'm', '--follow', 'hello'])).rejects.toThrow(
        /ended the event stream of task t_ended1 before the task finished \(it may be stopping\); the task goes on in the cluster: `hivemesh task t_ended1` shows it \(add --url http:\/\/OTHER-NODE:7420/,
      );
      // The text streamed so far ends its line before main's caller prints the error.
      expect(stderr.join('')).toMatch(/partial\n$/);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('says the task goes on, naming it, when the daemon dies between the submit and the event stream of --wait/--follow', async () => {
    // The daemon answers the submit, then dies before the event stream opens.
    const { server, url } = await followServer({ id: 't_gone1', status: 'queued', attempt: 0 }, (request) => request.socket.destroy());
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      for (const mode of ['--follow', '--wait']) {
        await expect(main(['submit', '--url', url, '--token', 'x', '--model', 'm', mode, 'hello'])).rejects.toThrow(
          /lost the connection to the daemon at http:\/\/127\.0\.0\.1:\d+ while following task t_gone1 .*the task goes on in the cluster: `hivemesh task t_gone1`/,
        );
      }
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('gives up following a task whose daemon sends nothing, not even its keep-alive (a stopped daemon), and says the task goes on', async () => {
    // The daemon opens the stream, says the task runs, and then freezes (SIGSTOP): no data, no close.
    const server = http.createServer((request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(`event: status\ndata: ${JSON.stringify({ type: 'status', taskId: 't_quiet1', status: 'running', attempt: 1, node: 'n2', at: 1, reason: null })}\n\n`);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const client = new ApiClient({ url, token: 'x', streamIdleMs: 300 });
      await expect(followTask(client, 't_quiet1', false, false, nodeNamer(null))).rejects.toThrow(
        /^lost the connection to the daemon at http:\/\/127\.0\.0\.1:\d+ while following task t_quiet1 \(it sent nothing for 0\.3 s, not even the keep-alive it sends every 15 s: stopped or cut off\); the task goes on in the cluster: `hivemesh task t_quiet1`/,
      );
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('retries a submit answered 503 (a leader election) with the same idempotency key', async () => {
    const { keys, server, url } = await submitServer((count) => (count < 3
      ? { status: 503, body: { error: { code: 'no_leader', message: 'no leader is known', details: null } } }
      : { status: 201, body: { id: 't_retried', status: 'queued' } }));
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const output = captureStdout();
    try {
      await expect(main(['submit', '--url', url, '--token', 'x', '--model', 'm', 'hello'])).resolves.toBe(0);
      expect(output()).toBe('t_retried\n');
      expect(keys).toHaveLength(3);
      expect(new Set(keys).size).toBe(1);
      expect(keys[0]).toMatch(/^cli-/);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }, 15_000);

  it('says the task was not created when every 503 was no_leader (the write reached no leader)', async () => {
    const { keys, server, url } = await submitServer(() => ({ status: 503, body: { error: { code: 'no_leader', message: 'no leader is known; retry shortly', details: null } } }));
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const error = await failureOf(['submit', '--url', url, '--token', 'x', '--model', 'm', 'hello']);
      expect(keys).toHaveLength(submitRetries + 1);
      const message = error!.message;
      expect(message).toMatch(new RegExp(`^error: gave up after ${submitRetries + 1} tries in \\d+ s, each answered 503 \\(last: no leader is known; retry shortly\\)\\. The task was not created: no answer came from a leader`));
      expect(message).toContain(`--idempotency-key ${keys[0]} still works`);
      expect(message).not.toContain('may or may not');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }, 20_000);

  it('gives up after its retries of a submit answered 503, saying so and giving the idempotency key to re-run with', async () => {
    // One answer reached no leader, the rest a leader without a quorum: the outcome is unknown.
    const { keys, server, url } = await submitServer((count) => (count === 1
      ? { status: 503, body: { error: { code: 'no_leader', message: 'no leader is known; retry shortly', details: null } } }
      : { status: 503, body: { error: { code: 'no_quorum', message: 'no quorum: 1 of 3 voters reachable', details: null } } }));
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const error = await main(['submit', '--url', url, '--token', 'x', '--model', 'm', 'hello']).then(() => null, (caught: unknown) => caught);
      expect(error).toBeInstanceOf(CliError);
      expect(keys).toHaveLength(submitRetries + 1);
      expect(new Set(keys).size).toBe(1);
      const message = (error as CliError).message;
      expect(message).toMatch(new RegExp(`^error: gave up after ${submitRetries + 1} tries in \\d+ s, each answered 503 \\(last: no quorum: 1 of 3 voters reachable\\)\\. The task may or may not have been created\\.`));
      expect(message).toContain(`Run the same command again with --idempotency-key ${keys[0]}: that key returns the task if it exists and creates it only if it does not, never twice.`);
      expect(message).not.toMatch(/retry after/);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }, 20_000);

  it('says a submit whose connection died before the answer may have created the task, and gives the idempotency key', async () => {
    // The daemon reads the submit and dies before answering (its leader killed mid-write):
    // the task may be committed, and a re-run without the key would make a second one.
    const { keys, server, url } = await submitServer(() => null);
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      for (const mode of [[], ['--wait']]) {
        const error = await failureOf(['submit', '--url', url, '--token', 'x', '--model', 'm', ...mode, 'hello']);
        const message = error!.message;
        expect(message).toMatch(/^error: the daemon at http:\/\/127\.0\.0\.1:\d+ gave no answer to the submit \(UND_ERR_SOCKET: the connection broke or timed out\)\./);
        expect(message).toContain('The task may or may not have been created.');
        expect(message).toContain(`Run the same command again with --idempotency-key ${keys.at(-1)}`);
        expect(message).not.toContain('hivemesh start');
      }
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    // Refused outright (nothing listens): nothing was sent, the plain message stands.
    const refused = await failureOf(['submit', '--url', url, '--token', 'x', '--model', 'm', 'hello']);
    expect(refused!.message).toMatch(/^no hivemesh daemon answers at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
  });

  it('warns when `assign` pins a task where it cannot run, with a hint that fits the reason, and passes on refusals', async () => {
    const daemon = await fakeDaemon((method, path) => {
      if (path === '/api/status/agents') return { status: 200, body: clusterNodes };
      if (path.endsWith('/t_lacks/assign')) return { status: 200, body: taskView({ id: 't_lacks', pinnedNode: st2, waitingFor: `pinned to node st2 (${st2}), which lacks model mistral:7b` }) };
      if (path.endsWith('/t_suspect/assign')) return { status: 200, body: taskView({ id: 't_suspect', pinnedNode: st1, waitingFor: `pinned to node st1 (${st1}), which is not alive` }) };
      if (path.endsWith('/t_nosuch/assign')) {
        return { status: 400, body: { error: { code: 'invalid_input', message: 'node: no node "nosuch" is known; `hivemesh nodes` lists ids and names', details: { fields: [{ field: 'node', reason: 'is not a known node' }] } } } };
      }
      const message = `node op2 (${st3Old}) is dead (last seen 95 s ago); a task pinned to it would wait until it comes back. Pin to an alive node: \`hivemesh nodes\` lists them`;
      return { status: 409, body: { error: { code: 'conflict', message, details: { node: st3Old, state: 'dead' } } } };
    });
    const warnings: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      warnings.push(String(chunk));
      return true;
    });
    const output = captureStdout();
    const assign = (id: string, node: string) => main(['assign', '--url', daemon.url, '--token', 'x', id, node]);
    try {
      await expect(assign('t_lacks', 'st2')).resolves.toBe(0);
      expect(warnings.splice(0).join('')).toBe('warning: the task is pinned to node st2, which lacks model mistral:7b; it waits until that changes (`hivemesh nodes` lists each node\'s models)\n');
      await expect(assign('t_suspect', 'st1')).resolves.toBe(0);
      expect(warnings.splice(0).join('')).toBe('warning: the task is pinned to node st1, which is not alive; it waits until that changes (`hivemesh nodes` shows its state)\n');
      expect(output()).toBe('task t_lacks pinned to st2\ntask t_suspect pinned to st1\n');
      await expect(assign('t_dead', 'op2')).rejects.toThrow(/^error: node op2 \(12D3KooW\w+\) is dead \(last seen 95 s ago\); .*Pin to an alive node/);
      const unknown = await failureOf(['assign', '--url', daemon.url, '--token', 'x', 't_nosuch', 'nosuch']);
      expect([unknown?.exitCode, unknown?.message]).toEqual([1, 'error: no node "nosuch" is known; `hivemesh nodes` lists ids and names']);
    } finally {
      await daemon.close();
    }
  });

  it('still answers `assign`, by short id, when the node list cannot be had', async () => {
    const daemon = await fakeDaemon((method, path) => (path.endsWith('/assign')
      ? { status: 200, body: taskView({ pinnedNode: st2, waitingFor: null }) }
      : { status: 500, body: { error: { code: 'internal', message: 'boom', details: null } } }));
    const output = captureStdout();
    try {
      await expect(main(['assign', '--url', daemon.url, '--token', 'x', 't_1', 'st2'])).resolves.toBe(0);
      expect(output()).toBe('task t_1 pinned to 12D3Ko…Hb7Ukq\n');
    } finally {
      await daemon.close();
    }
  });

  describe('names nodes as the dashboard does', () => {
    it('status: the leader, voters and learners by name, with a short id where two nodes share a name', async () => {
      const cluster = {
        clusterId: 'c1', nodeName: 'st2', nodeId: st2, role: 'follower', leaderId: st1, term: 4, commitIndex: 9, appliedIndex: 9,
        voters: [st1, st2, st3], learners: [st3Old], nodes: { total: 4, alive: 3, suspect: 0, dead: 1 }, tasks: { total: 0 },
        softwareVersion: '1', protocolVersion: 1, clusterKeyFingerprint: 'ab', listenAddresses: [], alerts: [],
      };
      let nodesAnswer = true;
      const daemon = await fakeDaemon((method, path) => (path === '/api/status/agents'
        ? (nodesAnswer ? { status: 200, body: clusterNodes } : { status: 503, body: { error: { code: 'unavailable', message: 'x', details: null } } })
        : { status: 200, body: cluster }));
      try {
        let output = captureStdout();
        await expect(main(['status', '--url', daemon.url, '--token', 'x'])).resolves.toBe(0);
        expect(output()).toMatch(/^leader {4}st1$/m);
        expect(output()).toMatch(/^voters {4}st1, st2, st3 \(12D3Ko…Mn2pQr\) {3}learners st3 \(12D3Ko…Zz9aaa\)$/m);
        vi.restoreAllMocks();
        nodesAnswer = false;
        output = captureStdout();
        await expect(main(['status', '--url', daemon.url, '--token', 'x'])).resolves.toBe(0);
        expect(output()).toMatch(/^leader {4}12D3Ko…GeaESf$/m);
        vi.restoreAllMocks();
        output = captureStdout();
        await expect(main(['status', '--url', daemon.url, '--token', 'x', '--json'])).resolves.toBe(0);
        expect(JSON.parse(output())).toEqual(cluster);
      } finally {
        await daemon.close();
      }
    });

    it('tasks: NODE by name, and a NOTE with the title and, whole, the reason a task waits', async () => {
      const busy = `node st1 (${st1}) is busy (2 of 2 slots taken)`;
      const tasks = [
        taskView({ id: 't_run', status: 'running', assignedNode: st3Old, attempt: 1, title: 'nightly report' }),
        taskView({ id: 't_titled', title: 'summarise the incident review notes', waitingFor: busy }),
        taskView({ id: 't_bare', waitingFor: `pinned to node st2 (${st2}), which lacks an agent with capability code-review on model llama3.2:3b` }),
      ];
      const daemon = await fakeDaemon((method, path) => (path === '/api/status/agents' ? { status: 200, body: clusterNodes } : { status: 200, body: { tasks, nextCursor: null } }));
      try {
        let output = captureStdout();
        await expect(main(['tasks', '--url', daemon.url, '--token', 'x'])).resolves.toBe(0);
        const rows = output().split('\n');
        expect(rows[1]).toMatch(/^t_run +running +llama3\.2:3b +5 +st3 \(12D3Ko…Zz9aaa\) +1 +\S+ ago +nightly report$/);
        expect(rows[2]).toMatch(/ summarise the incident review notes — waits: node st1 is busy \(2 of 2 slots taken\)$/);
        expect(rows[3]).toMatch(/ pinned to node st2, which lacks an agent with capability code-review on model llama3\.2:3b$/);
        expect(output()).not.toContain('12D3KooW');
        vi.restoreAllMocks();
        // On a terminal the title gives way to the reason: cut where the line has room for some of it, else left out.
        const ttyDescriptor = Object.getOwnPropertyDescriptor(process.stdout, 'isTTY');
        const columnsDescriptor = Object.getOwnPropertyDescriptor(process.stdout, 'columns');
        Object.defineProperty(process.stdout, 'isTTY', { value: true, configurable: true });
        try {
          for (const [columns, note] of [[80, / ago {2}node st1 is busy \(2 of 2 slots taken\)$/], [140, / ago {2}summarise the [a-z ]+… — waits: node st1 is busy \(2 of 2 slots taken\)$/]] as const) {
            Object.defineProperty(process.stdout, 'columns', { value: columns, configurable: true });
            output = captureStdout();
            await expect(main(['tasks', '--url', daemon.url, '--token', 'x'])).resolves.toBe(0);
            const lines = output().split('\n');
            expect(lines[2]).toMatch(note);
            expect(Math.max(...lines.map((line) => line.length))).toBeLessThanOrEqual(Math.max(columns, lines[0]!.indexOf('NOTE') + 40));
            vi.restoreAllMocks();
          }
        } finally {
          for (const [property, descriptor] of [['isTTY', ttyDescriptor], ['columns', columnsDescriptor]] as const) {
            if (descriptor === undefined) Reflect.deleteProperty(process.stdout, property);
            else Object.defineProperty(process.stdout, property, descriptor);
          }
        }
        vi.restoreAllMocks();
        output = captureStdout();
        await expect(main(['tasks', '--url', daemon.url, '--token', 'x', '--json'])).resolves.toBe(0);
        expect(JSON.parse(output())).toEqual({ tasks, nextCursor: null });
      } finally {
        await daemon.close();
      }
    });

    it('task: its node and pin by name, and why it waits as a reason', async () => {
      const task = taskView({ id: 't_pin', pinnedNode: st3, waitingFor: `pinned to node st3 (${st3}), which lacks model mistral:7b`, attempts: [{ attempt: 1, status: 'lost', node: st1, error: `node st1 (${st1}) stopped answering` }] });
      const daemon = await fakeDaemon((method, path) => (path === '/api/status/agents' ? { status: 200, body: clusterNodes } : { status: 200, body: task }));
      const output = captureStdout();
      try {
        await expect(main(['task', '--url', daemon.url, '--token', 'x', 't_pin'])).resolves.toBe(0);
        expect(output()).toMatch(/^status {6}queued, waiting: pinned to node st3 \(12D3Ko…Mn2pQr\), which lacks model mistral:7b$/m);
        expect(output()).toMatch(/^node {8}- {3}pinned to st3 \(12D3Ko…Mn2pQr\)$/m);
        expect(output()).toMatch(/^ {2}attempt 1: lost on st1 \(node st1 stopped answering\)$/m);
        expect(output()).not.toContain('waiting for');
      } finally {
        await daemon.close();
      }
    });
  });

  it('nodes --json prints the node list as the API gives it, as status and tasks do', async () => {
    const daemon = await fakeDaemon(() => ({ status: 200, body: clusterNodes }));
    const output = captureStdout();
    try {
      await expect(main(['nodes', '--url', daemon.url, '--token', 'x', '--json'])).resolves.toBe(0);
      expect(JSON.parse(output())).toEqual(clusterNodes);
    } finally {
      await daemon.close();
    }
  });

  it('nodes shows a never-heard node by the name the replicated state gave it, whole, or by short id', async () => {
    const named = peerId('Named1');
    const unnamed = peerId('Nameless');
    const unheard = (id: string, name: string) => ({ id, name, state: 'dead', raftRole: 'follower', neverHeard: true });
    const daemon = await fakeDaemon(() => ({ status: 200, body: { nodes: [unheard(named, 'gpu-box-basement-2'), unheard(unnamed, unnamed)] } }));
    const output = captureStdout();
    try {
      await expect(main(['nodes', '--url', daemon.url, '--token', 'x'])).resolves.toBe(0);
      expect(output()).toMatch(/^gpu-box-basement-2 +12D3Ko…Named1 +dead +follower .*never heard$/m);
      expect(output()).toMatch(/^12D3Ko…meless +12D3Ko…meless +dead/m);
    } finally {
      await daemon.close();
    }
  });

  it('refuses flag values outside the ranges its help gives, as wrong usage, before asking any daemon', async () => {
    await expectUsageErrors([
      [['tasks', '--limit', '0'], `--limit must be a whole number in 1..${limits.listLimitMax}, got "0"`],
      [['tasks', '--limit', `${limits.listLimitMax + 1}`], `--limit must be a whole number in 1..${limits.listLimitMax}`],
      [['tasks', '--status', 'bogus'], `--status must be one of ${taskStatuses.join('|')}, got "bogus"`],
      [['submit', '--model', 'm', '--priority', `${limits.taskPriorityMax + 1}`, 'hi'], `--priority must be a whole number in ${limits.taskPriorityMin}..${limits.taskPriorityMax}, got "${limits.taskPriorityMax + 1}"`],
      [['submit', '--model', 'm', '--timeout-ms', '5', 'hi'], `--timeout-ms must be a whole number in ${limits.taskTimeoutMsMin}..${limits.taskTimeoutMsMax}`],
      [['submit', '--model', 'm', '--max-attempts', '0', 'hi'], `--max-attempts must be a whole number in 1..${limits.taskMaxAttemptsMax}`],
      [['submit', '--model', 'm', '--priority', 'high', 'hi'], '--priority must be a whole number'],
      [['tasks', '--cursor', 'garbage'], '--cursor must be the C of a previous page\'s "more: hivemesh tasks --cursor C" line, got "garbage"'],
      [['token', 'create', '--role', 'root', '--name', 'x'], `--role must be one of ${roles.join('|')}, got "root"`],
      [['token', 'create', '--role', 'viewer', '--name', 'n'.repeat(limits.tokenNameLengthMax + 1)], `--name must have 1 to ${limits.tokenNameLengthMax} characters`],
    ]);
  });

  it('says what to do when the daemon does not answer in time, and submits nothing after a read timed out', async () => {
    const fetches = vi.spyOn(globalThis, 'fetch').mockRejectedValue(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
    const status = await failureOf(['status', '--url', 'http://127.0.0.1:9', '--token', 'x']);
    expect(status?.message).toMatch(/did not answer within 30 s: it is overloaded or stopped.*--url http:\/\/OTHER-NODE:7420/);
    fetches.mockClear();
    const submit = await failureOf(['submit', '--model', 'm', '--url', 'http://127.0.0.1:9', '--token', 'x', 'hi']);
    expect(submit?.message).toMatch(/did not answer within 30 s.*Nothing was submitted\.$/);
    expect(fetches.mock.calls.map(([, init]) => init?.method)).toEqual(['GET']);
  });

  it('refuses words a command does not take, before asking any daemon, instead of dropping them', async () => {
    await expectUsageErrors([
      [['cancel', 't_1', 't_2'], 'unexpected argument "t_2"; usage: hivemesh cancel ID.'],
      [['task', 't_1', 't_2', 't_3'], 'unexpected arguments "t_2" "t_3"; usage: hivemesh task ID.'],
      [['tasks', 'running'], 'unexpected argument "running"; usage: hivemesh tasks [--status S]'],
      [['status', 'now'], 'unexpected argument "now"; usage: hivemesh status.'],
      [['nodes', 'n1'], 'unexpected argument "n1"'],
      [['assign', 't_1', 'n1', 'n2'], 'unexpected argument "n2"; usage: hivemesh assign ID NODE.'],
      [['token', 'revoke', 'tok_1', 'tok_2'], 'unexpected argument "tok_2"; usage: hivemesh token create --role ROLE --name NAME | hivemesh token list | hivemesh token revoke ID.'],
      [['token', 'list', 'all'], 'unexpected argument "all"'],
    ]);
  });

  it('refuses an unknown command and says where the commands are', async () => {
    await expect(main(['frobnicate'])).rejects.toThrow(/unknown command "frobnicate".*hivemesh --help/);
  });
});
