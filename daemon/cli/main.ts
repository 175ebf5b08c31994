// The `hivemesh` command line: `start` runs the daemon; every other command talks to a
// daemon's HTTP API (--url / HIVEMESH_URL, default the local one) with a token
// (--token / HIVEMESH_TOKEN, else the local admin token).
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PROTOCOL_VERSION, SOFTWARE_VERSION } from '../../protocol/version.ts';
import { ApiClient, CliError } from './client.ts';
import { nodesCommand, statusCommand } from './commands/status.ts';
import { assignCommand, cancelCommand, submitCommand, taskCommand, tasksCommand, type SubmitFlags } from './commands/tasks.ts';
import { tokenCommand } from './commands/tokens.ts';

const usage = `hivemesh ${SOFTWARE_VERSION}: run LLM agents across the GPU machines of a LAN

Usage:
  hivemesh start [--config F] [--data-dir D] [--name N] [--api-host H] [--api-port P]
                 [--p2p-port P] [--ollama-url U] [--secret-file F]
                 [--bootstrap MULTIADDR]... [--no-mdns]      run the daemon on this machine
  hivemesh status                     the cluster as this node sees it
  hivemesh nodes                      every node: state, role, GPUs, models, load
  hivemesh submit [--model M | --capability C] [--wait | --follow] [--priority 0..10]
                  [--title T] [--system S] [--depends-on ID]... [--timeout-ms N]
                  [--max-attempts N] [--idempotency-key K] PROMPT|-
                                      submit a task (prints its id; --wait prints the
                                      result, --follow streams tokens as they come)
  hivemesh tasks [--status S] [--limit N] [--cursor C]   list tasks, newest first
  hivemesh task ID                    one task: status, node, attempts, usage, output
  hivemesh cancel ID                  cancel a task (aborts a running generation)
  hivemesh assign ID NODE             pin a queued task to a node (id or name)
  hivemesh token create --role admin|operator|viewer --name NAME
  hivemesh token list | hivemesh token revoke ID
  hivemesh version                    the version of this command

Options for the commands that talk to a daemon:
  --url URL        the daemon's API (default http://127.0.0.1:7420, or HIVEMESH_URL)
  --token TOKEN    a bearer token (default HIVEMESH_TOKEN, else <data-dir>/admin.token)
  --data-dir D     where to find the local admin token (default ~/.hivemesh)
  --json           machine-readable output

Run \`hivemesh start --help\` for every daemon setting.`;

const clientOptions = {
  url: { type: 'string' },
  token: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parseClientArgs(args: string[], extra: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {}) {
  try {
    return parseArgs({ args, options: { ...clientOptions, ...extra }, strict: true, allowPositionals: true });
  } catch (error) {
    throw new CliError(`${(error as Error).message}\nRun \`hivemesh --help\` for usage.`, 2);
  }
}

function clientFrom(values: Record<string, unknown>): ApiClient {
  return new ApiClient({ url: values.url as string | undefined, token: values.token as string | undefined, dataDir: values['data-dir'] as string | undefined });
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  // `hivemesh submit --help` and the like: the usage, not an error about a missing flag
  // (start has its own, longer help).
  if (command !== undefined && command !== 'start' && (rest.includes('--help') || rest.includes('-h'))) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  switch (command) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${usage}\n`);
      return command === undefined ? 2 : 0;
    case 'version':
    case '--version':
      process.stdout.write(rest.includes('--json') ? `${JSON.stringify({ version: SOFTWARE_VERSION, protocolVersion: PROTOCOL_VERSION })}\n` : `hivemesh ${SOFTWARE_VERSION}\n`);
      return 0;
    case 'start': {
      const { startCommand } = await import('./commands/start.ts');
      return startCommand(rest);
    }
    case 'status':
    case 'nodes': {
      const { values } = parseClientArgs(rest);
      const client = clientFrom(values);
      const output = command === 'status' ? await statusCommand(client, values.json === true) : await nodesCommand(client, values.json === true);
      process.stdout.write(`${output}\n`);
      return 0;
    }
    case 'submit': {
      const { values, positionals } = parseClientArgs(rest, {
        model: { type: 'string' }, capability: { type: 'string' }, wait: { type: 'boolean' }, follow: { type: 'boolean' },
        priority: { type: 'string' }, title: { type: 'string' }, system: { type: 'string' }, 'depends-on': { type: 'string', multiple: true },
        'timeout-ms': { type: 'string' }, 'max-attempts': { type: 'string' }, 'idempotency-key': { type: 'string' },
      });
      return submitCommand(clientFrom(values), values as SubmitFlags, positionals);
    }
    case 'tasks': {
      const { values } = parseClientArgs(rest, { status: { type: 'string' }, limit: { type: 'string' }, cursor: { type: 'string' } });
      process.stdout.write(`${await tasksCommand(clientFrom(values), values as { status?: string; limit?: string; cursor?: string; json?: boolean })}\n`);
      return 0;
    }
    case 'task':
    case 'cancel': {
      const { values, positionals } = parseClientArgs(rest);
      const id = positionals[0];
      if (id === undefined) throw new CliError(`usage: hivemesh ${command} ID`, 2);
      const client = clientFrom(values);
      process.stdout.write(`${command === 'task' ? await taskCommand(client, id, values.json === true) : await cancelCommand(client, id, values.json === true)}\n`);
      return 0;
    }
    case 'assign': {
      const { values, positionals } = parseClientArgs(rest);
      const [id, node] = positionals;
      if (id === undefined || node === undefined) throw new CliError('usage: hivemesh assign ID NODE', 2);
      process.stdout.write(`${await assignCommand(clientFrom(values), id, node, values.json === true)}\n`);
      return 0;
    }
    case 'token': {
      const { values, positionals } = parseClientArgs(rest, { role: { type: 'string' }, name: { type: 'string' } });
      process.stdout.write(`${await tokenCommand(clientFrom(values), positionals, values as { role?: string; name?: string; json?: boolean })}\n`);
      return 0;
    }
    default:
      throw new CliError(`unknown command "${command}". Run \`hivemesh --help\` for the commands.`, 2);
  }
}

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (invokedDirectly) {
  main(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; },
    (error: unknown) => {
      if (error instanceof CliError) {
        process.stderr.write(`${error.message}\n`);
        process.exitCode = error.exitCode;
      } else {
        process.stderr.write(`hivemesh: unexpected error: ${(error as Error).stack ?? String(error)}\n`);
        process.exitCode = 1;
      }
    },
  );
}
