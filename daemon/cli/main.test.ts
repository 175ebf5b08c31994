// The CLI's entry: --help on any client command prints the usage and succeeds; unknown
// commands fail with a pointer to it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
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

describe('hivemesh CLI', () => {
  it('prints the usage for --help or -h after a client command, without contacting a daemon', async () => {
    for (const argv of [['submit', '--help'], ['tasks', '-h'], ['token', 'create', '--help'], ['cancel', '--help']]) {
      const output = captureStdout();
      await expect(main(argv)).resolves.toBe(0);
      expect(output()).toMatch(/hivemesh submit \[--model M \| --capability C\]/);
      vi.restoreAllMocks();
    }
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
        if (keys.length < 3) {
          response.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end(JSON.stringify({ error: { code: 'no_leader', message: 'no leader is known', details: null } }));
        } else {
          response.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 't_retried', status: 'queued' }));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
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

  it('refuses an unknown command and says where the commands are', async () => {
    await expect(main(['frobnicate'])).rejects.toThrow(/unknown command "frobnicate".*hivemesh --help/);
  });
});
