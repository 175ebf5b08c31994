// Starts real hivemesh daemons as child processes for the multi-process suites: each with
// its own data dir, ports on 127.0.0.1 (or a network namespace), and optionally its own
// Ollama stand-in. Everything is torn down by `stopAll`, and every wait is bounded.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const cliEntry = join(repoRoot, 'daemon', 'cli', 'main.ts');

/**
 * Ports for daemons are picked below the kernel's ephemeral range (32768-60999 here), from
 * a slice of 1,000 per test worker: a port from listen(0) is itself ephemeral, and between
 * closing the probe and the daemon's own listen an outgoing connection of any process could
 * take it as its source port (seen: EADDRINUSE in CI). Outgoing connections never use ports
 * below the ephemeral range, other workers use other slices, and this process never hands
 * out the same port twice while it can avoid it.
 */
const portSliceSize = 1_000;
const portSlicesBase = 20_000;
const portSlices = 12;
const handedOut = new Set<number>();

function canListen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const worker = Number(process.env['VITEST_POOL_ID'] ?? process.env['VITEST_WORKER_ID'] ?? 0) || (process.pid % portSlices);
  const base = portSlicesBase + (worker % portSlices) * portSliceSize;
  if (handedOut.size >= portSliceSize - 50) handedOut.clear();
  for (let tries = 0; tries < portSliceSize; tries += 1) {
    const port = base + Math.floor(Math.random() * portSliceSize);
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    if (await canListen(port, host)) return port;
  }
  throw new Error(`no free port in ${base}..${base + portSliceSize - 1} on ${host}`);
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `hivemesh-${prefix}-`));
}

export interface DaemonSpec {
  name: string;
  dataDir?: string;
  apiPort?: number;
  p2pPort?: number;
  host?: string;
  ollamaUrl?: string;
  secretFile?: string;
  bootstrap?: string[];
  mdns?: boolean;
  extraArgs?: string[];
  env?: Record<string, string>;
  /** Run inside this network namespace (`ip netns exec NS`). */
  netns?: string;
}

export class DaemonProcess {
  readonly spec: Required<Pick<DaemonSpec, 'name' | 'dataDir' | 'apiPort' | 'p2pPort' | 'host'>> & DaemonSpec;
  child: ChildProcess | null = null;
  output = '';
  private exitPromise: Promise<number | null> | null = null;

  constructor(spec: DaemonSpec & { dataDir: string; apiPort: number; p2pPort: number }) {
    this.spec = { host: '127.0.0.1', ...spec };
  }

  get apiUrl(): string {
    return `http://${this.spec.host}:${this.spec.apiPort}`;
  }

  get adminToken(): string {
    return readFileSync(join(this.spec.dataDir, 'admin.token'), 'utf8').trim();
  }

  get clusterKeyPath(): string {
    return join(this.spec.dataDir, 'cluster.key');
  }

  args(): string[] {
    const { spec } = this;
    const args = [
      cliEntry, 'start',
      '--name', spec.name,
      '--data-dir', spec.dataDir,
      '--api-host', spec.host, '--api-port', String(spec.apiPort),
      '--p2p-host', spec.host, '--p2p-port', String(spec.p2pPort),
      '--ollama-url', spec.ollamaUrl ?? 'http://127.0.0.1:9',
    ];
    if (spec.secretFile !== undefined) args.push('--secret-file', spec.secretFile);
    for (const address of spec.bootstrap ?? []) args.push('--bootstrap', address);
    if (spec.mdns === false) args.push('--no-mdns');
    args.push(...(spec.extraArgs ?? []));
    return args;
  }

  start(): void {
    const command = this.spec.netns === undefined ? process.execPath : 'ip';
    const args = this.spec.netns === undefined ? this.args() : ['netns', 'exec', this.spec.netns, process.execPath, ...this.args()];
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      // MALLOC_ARENA_MAX as bin/hivemesh sets it, so measured memory matches the product's.
      env: { MALLOC_ARENA_MAX: '2', ...process.env, HIVEMESH_LOG: process.env.HIVEMESH_TEST_LOG ?? 'warn', ...this.spec.env },
    });
    this.output = '';
    const append = (chunk: Buffer) => {
      this.output += chunk.toString();
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    this.exitPromise = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    this.child = child;
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends a signal; SIGKILL is a crash, SIGTERM a graceful stop. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    this.child?.kill(signal);
  }

  async waitExit(timeoutMs = 15_000): Promise<number | null> {
    if (this.exitPromise === null) return null;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.spec.name} did not exit within ${timeoutMs} ms\n${this.output.slice(-3000)}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exitPromise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.kill('SIGTERM');
    try {
      await this.waitExit(10_000);
    } catch {
      this.kill('SIGKILL');
      await this.waitExit(5_000).catch(() => undefined);
    }
  }

  async api<T = unknown>(path: string, init: { method?: string; body?: unknown; token?: string | null; timeoutMs?: number } = {}): Promise<{ status: number; body: T; headers: Headers }> {
    const token = init.token === undefined ? this.adminToken : init.token;
    const headers: Record<string, string> = {};
    if (token !== null) headers.authorization = `Bearer ${token}`;
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(this.apiUrl + path, {
      method: init.method ?? 'GET',
      headers,
      body: init.body === undefined ? null : typeof init.body === 'string' ? init.body : JSON.stringify(init.body),
      signal: AbortSignal.timeout(init.timeoutMs ?? 10_000),
    });
    const text = await response.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch { /* not JSON */ }
    return { status: response.status, body: body as T, headers: response.headers };
  }
}

export async function waitUntil<T>(what: string, probe: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== null && value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError === null ? '' : ` (last error: ${(lastError as Error).message})`}`);
}

/** A set of daemons and temp dirs to tear down together. */
export class ProcessGroup {
  readonly daemons: DaemonProcess[] = [];
  private readonly dirs: string[] = [];
  private readonly cleanups: Array<() => Promise<void> | void> = [];

  async daemon(spec: DaemonSpec): Promise<DaemonProcess> {
    const dataDir = spec.dataDir ?? tempDir(spec.name);
    if (spec.dataDir === undefined) this.dirs.push(dataDir);
    const host = spec.host ?? '127.0.0.1';
    const daemon = new DaemonProcess({
      ...spec,
      dataDir,
      apiPort: spec.apiPort ?? (spec.netns === undefined ? await freePort(host) : 7420),
      p2pPort: spec.p2pPort ?? (spec.netns === undefined ? await freePort(host) : 7421),
    });
    this.daemons.push(daemon);
    return daemon;
  }

  onCleanup(cleanup: () => Promise<void> | void): void {
    this.cleanups.push(cleanup);
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.daemons.map((daemon) => daemon.stop()));
    for (const cleanup of this.cleanups.reverse()) await cleanup();
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
  }
}

/** The multiaddr of a started daemon on its host address, read from its status. */
export async function listenAddressOf(daemon: DaemonProcess, timeoutMs = 20_000): Promise<string> {
  return waitUntil(`${daemon.spec.name} to listen`, async () => {
    const { status, body } = await daemon.api<{ listenAddresses: string[] }>('/api/status/cluster');
    if (status !== 200) return null;
    return body.listenAddresses.find((address) => address.includes(`/${daemon.spec.host}/`)) ?? null;
  }, timeoutMs);
}
