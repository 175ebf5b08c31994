// The CLI's entry: --help on a client command (or `help <command>`) prints that command's
// own help and succeeds; unknown commands fail with a pointer to the usage.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as limits from '../../protocol/limits.ts';
import { taskStatuses } from '../../protocol/tasks.ts';
import { roles } from '../../protocol/tokens.ts';
import { CliError } from './client.ts';
import { submitRetries } from './commands/tasks.ts';
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
 * `answer(count)` (503s with Retry-After 1); other requests get an empty node list.
 */
async function submitServer(answer: (count: number) => { status: number; body: unknown }) {
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
      const { status, body } = answer(keys.length);
      response.writeHead(status, { 'content-type': 'application/json', ...(status === 503 ? { 'retry-after': '1' } : {}) }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { keys, server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
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
      await expect(main([command, ...args, '--url', 'notaurl', 'ID', 'NODE'])).rejects.toThrow(/is not an http\(s\) URL/);
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
    const server = http.createServer((request, response) => {
      if (request.method === 'POST') {
        response.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify(task));
      } else if (request.url?.endsWith('/events')) {
        response.writeHead(200, { 'content-type': 'text/event-stream' });
        response.write(`event: status\ndata: ${JSON.stringify({ type: 'status', taskId: task.id, status: 'running', attempt: 1, node: 'n2', at: 1, reason: null })}\n\n`);
        setTimeout(() => request.socket.destroy(), 50);
      } else {
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ nodes: [] }));
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      for (const mode of ['--follow', '--wait']) {
        await expect(main(['submit', '--url', url, '--token', 'x', '--model', 'm', mode, 'hello'])).rejects.toThrow(
          /lost the connection to the daemon at http:\/\/127\.0\.0\.1:\d+ while following task t_lost1 .*the task goes on in the cluster: `hivemesh task t_lost1`/,
        );
      }
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

  it('gives up after its retries of a submit answered 503, saying so and giving the idempotency key to re-run with', async () => {
    const { keys, server, url } = await submitServer(() => ({ status: 503, body: { error: { code: 'no_quorum', message: 'no quorum: 1 of 3 voters reachable', details: null } } }));
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

  it('warns when `assign` pins a task where it cannot run, and passes on the refusal of a dead node', async () => {
    const waiting = { id: 't_pin1', status: 'queued', pinnedNode: 'id-op1', waitingFor: 'pinned to node id-op1, which lacks model mistral:7b' };
    const server = http.createServer((request, response) => {
      if (request.url?.endsWith('/t_pin1/assign')) {
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(waiting));
      } else {
        const message = 'node op2 (id-op2) is dead (last seen 95 s ago); a task pinned to it would wait until it comes back. Pin to an alive node: `hivemesh nodes` lists them';
        response.writeHead(409, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'conflict', message, details: { node: 'id-op2', state: 'dead' } } }));
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const warnings: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      warnings.push(String(chunk));
      return true;
    });
    const output = captureStdout();
    try {
      await expect(main(['assign', '--url', url, '--token', 'x', 't_pin1', 'op1'])).resolves.toBe(0);
      expect(output()).toBe('task t_pin1 pinned to id-op1\n');
      expect(warnings.join('')).toBe('warning: the task is pinned to node id-op1, which lacks model mistral:7b; it waits until that changes (`hivemesh nodes` lists each node\'s models)\n');
      await expect(main(['assign', '--url', url, '--token', 'x', 't_pin2', 'op2'])).rejects.toThrow(/^error: node op2 \(id-op2\) is dead \(last seen 95 s ago\); .*Pin to an alive node/);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('refuses an unknown command and says where the commands are', async () => {
    await expect(main(['frobnicate'])).rejects.toThrow(/unknown command "frobnicate".*hivemesh --help/);
  });
});
