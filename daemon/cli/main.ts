// The `hivemesh` command line: `start` runs the daemon; every other command talks to a
// daemon's HTTP API (--url / HIVEMESH_URL, default the local one) with a token
// (--token / HIVEMESH_TOKEN, else the local admin token).
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PROTOCOL_VERSION, SOFTWARE_VERSION } from '../../protocol/version.ts';
import { ApiClient, CliError } from './client.ts';
import { nodesCommand, statusCommand } from './commands/status.ts';
import { assignCommand, cancelCommand, submitCommand, taskCommand, tasksCommand, type SubmitFlags, type TasksFlags } from './commands/tasks.ts';
import { tokenCommand } from './commands/tokens.ts';
import { commandHelp, commandNames, commands, generalUsage, isClientCommand, loadProtocolFacts, parseOptionsOf, type ClientCommand } from './help.ts';

function parseClientArgs(command: ClientCommand, args: string[]) {
  try {
    return parseArgs({ args, options: parseOptionsOf(command), strict: true, allowPositionals: true });
  } catch (error) {
    throw new CliError(`${(error as Error).message}\nRun \`hivemesh ${command} --help\` for its flags.`, 2);
  }
}

/**
 * Words beyond what the command takes are a mistake to report, not to drop: `cancel A B`
 * must not cancel A alone and say nothing, nor `tasks running` list every task.
 */
function refuseExtraWords(command: ClientCommand, words: string[], max: number): void {
  if (words.length <= max) return;
  const extra = words.slice(max);
  const usage = commands[command].usage.map((line) => `hivemesh ${line}`).join(' | ');
  throw new CliError(`unexpected ${extra.length === 1 ? 'argument' : 'arguments'} ${extra.map((word) => JSON.stringify(word)).join(' ')}; usage: ${usage}. Run \`hivemesh ${command} --help\` for its flags.`, 2);
}

/** Whether the arguments ask for help: --help or -h before any `--` (after it, they are words). */
function asksForHelp(args: string[]): boolean {
  const terminator = args.indexOf('--');
  const options = terminator === -1 ? args : args.slice(0, terminator);
  return options.includes('--help') || options.includes('-h');
}

/** `hivemesh help <command>` and `hivemesh <command> --help`: that command's help. */
async function printCommandHelp(command: string): Promise<number> {
  if (command === 'start') {
    const { startCommand } = await import('./commands/start.ts');
    return startCommand(['--help']);
  }
  const name = command === '--version' ? 'version' : command;
  if (!isClientCommand(name)) {
    throw new CliError(`no command "${command}"; the commands are ${commandNames.join(', ')}. Run \`hivemesh --help\` for the usage.`, 2);
  }
  process.stdout.write(`${commandHelp(name, await loadProtocolFacts())}\n`);
  return 0;
}

function clientFrom(values: Record<string, unknown>): ApiClient {
  return new ApiClient({ url: values.url as string | undefined, token: values.token as string | undefined, dataDir: values['data-dir'] as string | undefined });
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const generalHelp = command === undefined || command === 'help' || command === '--help' || command === '-h';
  const topic = rest[0];
  if (command === 'help' && topic !== undefined && topic !== '--help' && topic !== '-h') return printCommandHelp(topic);
  // `hivemesh submit --help` and the like: that command's help, not an error about a
  // missing flag (start prints its own).
  if (!generalHelp && command !== 'start' && asksForHelp(rest)) return printCommandHelp(command);
  switch (command) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${generalUsage(await loadProtocolFacts())}\n`);
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
      const { values, positionals } = parseClientArgs(command, rest);
      refuseExtraWords(command, positionals, 0);
      const client = clientFrom(values);
      const output = command === 'status' ? await statusCommand(client, values.json === true) : await nodesCommand(client, values.json === true);
      process.stdout.write(`${output}\n`);
      return 0;
    }
    case 'submit': {
      const { values, positionals } = parseClientArgs(command, rest);
      return submitCommand(clientFrom(values), values as SubmitFlags, positionals);
    }
    case 'tasks': {
      const { values, positionals } = parseClientArgs(command, rest);
      refuseExtraWords(command, positionals, 0);
      process.stdout.write(`${await tasksCommand(clientFrom(values), values as TasksFlags)}\n`);
      return 0;
    }
    case 'task':
    case 'cancel': {
      const { values, positionals } = parseClientArgs(command, rest);
      const id = positionals[0];
      if (id === undefined) throw new CliError(`usage: hivemesh ${command} ID`, 2);
      refuseExtraWords(command, positionals, 1);
      const client = clientFrom(values);
      process.stdout.write(`${command === 'task' ? await taskCommand(client, id, values.json === true) : await cancelCommand(client, id, values.json === true)}\n`);
      return 0;
    }
    case 'assign': {
      const { values, positionals } = parseClientArgs(command, rest);
      const [id, node] = positionals;
      if (id === undefined || node === undefined) throw new CliError('usage: hivemesh assign ID NODE', 2);
      refuseExtraWords(command, positionals, 2);
      process.stdout.write(`${await assignCommand(clientFrom(values), id, node, values.json === true)}\n`);
      return 0;
    }
    case 'token': {
      const { values, positionals } = parseClientArgs(command, rest);
      refuseExtraWords(command, positionals, positionals[0] === 'revoke' ? 2 : 1);
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
