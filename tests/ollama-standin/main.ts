// Runs the Ollama stand-in as a process, for multi-process tests and the demo:
//   node tests/ollama-standin/main.ts --port 11500 --models llama3.2:1b,qwen2.5:7b \
//     --tokens-per-second 40 --cold-load-ms 1500 --log-file /tmp/standin.jsonl
// Prints the URL on stdout once listening; SIGINT/SIGTERM close it.
import { parseArgs } from 'node:util';
import { startStandin, type StandinOptions } from './server.ts';

const usage = `usage: node tests/ollama-standin/main.ts [--host H] [--port P] [--models a,b,...]
  [--tokens-per-second N] [--cold-load-ms N] [--keep-alive-ms N] [--max-concurrency N]
  [--max-queue N] [--response-tokens N] [--vram-gb N] [--log-file F] [--version V]`;

function fail(message: string): never {
  process.stderr.write(`ollama-standin: ${message}\n${usage}\n`);
  process.exit(2);
}

function numberFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0) fail(`--${name} must be a non-negative number, got "${value}"`);
  return parsed;
}

let parsed: ReturnType<typeof parseArgs>;
try {
  parsed = parseArgs({
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      models: { type: 'string' },
      'tokens-per-second': { type: 'string' },
      'cold-load-ms': { type: 'string' },
      'keep-alive-ms': { type: 'string' },
      'max-concurrency': { type: 'string' },
      'max-queue': { type: 'string' },
      'response-tokens': { type: 'string' },
      'vram-gb': { type: 'string' },
      'log-file': { type: 'string' },
      version: { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
} catch (error) {
  fail((error as Error).message);
}
const flags = parsed.values as Record<string, string | boolean | undefined>;
if (flags.help === true) {
  process.stdout.write(usage + '\n');
  process.exit(0);
}
const text = (name: string) => (typeof flags[name] === 'string' ? (flags[name] as string) : undefined);

const vramGb = numberFlag('vram-gb', text('vram-gb'));
const options: StandinOptions = {
  host: text('host'),
  port: numberFlag('port', text('port')),
  models: text('models')?.split(',').map((name) => name.trim()).filter((name) => name !== ''),
  tokensPerSecond: numberFlag('tokens-per-second', text('tokens-per-second')),
  coldLoadMs: numberFlag('cold-load-ms', text('cold-load-ms')),
  keepAliveMs: numberFlag('keep-alive-ms', text('keep-alive-ms')),
  maxConcurrency: numberFlag('max-concurrency', text('max-concurrency')),
  maxQueue: numberFlag('max-queue', text('max-queue')),
  responseTokens: numberFlag('response-tokens', text('response-tokens')),
  vramBytes: vramGb === undefined ? undefined : Math.round(vramGb * 1024 ** 3),
  logFile: text('log-file'),
  version: text('version'),
};

try {
  const standin = await startStandin(options);
  process.stdout.write(`${standin.url}\n`);
  const shutdown = () => {
    standin.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
} catch (error) {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') fail(`port ${options.port} is already in use: stop what listens there or pick another --port`);
  fail((error as Error).message);
}
