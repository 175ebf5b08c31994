// What `hivemesh --help` and `hivemesh <command> --help` say. The flags of each client
// command are declared here once: main.ts parses exactly these, and the ranges, defaults,
// statuses and roles in the texts come from protocol/, so the help cannot drift from what
// the command and the daemon accept.
import * as limits from '../../protocol/limits.ts';
import type { TaskStatus } from '../../protocol/tasks.ts';
import type { Action } from '../../protocol/tokens.ts';
import { SOFTWARE_VERSION } from '../../protocol/version.ts';
import { bytes } from './format.ts';

/**
 * What the help says that lives in protocol/'s schema modules. They load TypeBox (about
 * 0.1 s), so they are imported only when help is printed, not on every command.
 */
export interface ProtocolFacts {
  taskStatuses: readonly TaskStatus[];
  finishedStatuses: readonly TaskStatus[];
  memberStates: readonly string[];
  raftRoles: readonly string[];
  roles: readonly string[];
  /** `admin, operator or viewer`: the roles allowed to do `action`. */
  rolesThatCan(action: Action): string;
  /** `admin may read, submit tasks, ...; operator may ...`. */
  rolePermissions: string;
}

const literalsOf = (union: { anyOf: ReadonlyArray<{ const: string }> }): string[] => union.anyOf.map((literal) => literal.const);

/** `a`, `a or b`, `a, b or c`. */
function oneOf(values: readonly string[]): string {
  return values.length <= 1 ? values.join('') : `${values.slice(0, -1).join(', ')} or ${values.at(-1)!}`;
}

export async function loadProtocolFacts(): Promise<ProtocolFacts> {
  const [tasks, tokens, api, heartbeat] = await Promise.all([
    import('../../protocol/tasks.ts'), import('../../protocol/tokens.ts'), import('../../protocol/api.ts'), import('../../protocol/heartbeat.ts'),
  ]);
  return {
    taskStatuses: tasks.taskStatuses,
    finishedStatuses: tasks.finishedStatuses,
    memberStates: literalsOf(api.MemberState),
    raftRoles: literalsOf(heartbeat.RaftRole),
    roles: tokens.roles,
    rolesThatCan: (action) => oneOf(tokens.roles.filter((role) => tokens.can(role, action))),
    rolePermissions: tokens.roles.map((role) => `${role} may ${tokens.permissions[role].map((action) => tokens.actionWords[action]).join(', ')}`).join('; '),
  };
}

/** Help text, or a function of the protocol facts it needs. */
type Text = string | ((facts: ProtocolFacts) => string);
const textOf = (text: Text, facts: ProtocolFacts): string => (typeof text === 'string' ? text : text(facts));

/** One flag of a command: how parseArgs reads it, and what its help says. */
export interface FlagSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  short?: string;
  /** The value's name in the help (`--priority N`); none for a boolean flag. */
  value?: string;
  /** What it does, with its default and valid values. */
  description: Text;
}

export interface CommandSpec {
  /** One line: what the command is for. */
  summary: string;
  /** Synopsis lines, each after `hivemesh `. */
  usage: string[];
  /** Paragraphs on what it does and prints. */
  description: Text[];
  /** The command's own flags, beyond the shared ones. */
  flags: Record<string, FlagSpec>;
  /** Whether it talks to a daemon, and so takes --url, --token and --data-dir. */
  talksToDaemon: boolean;
  /** What --json prints for this command. */
  json: string;
  examples: string[];
}

/** The flags of every command that talks to a daemon (--json's text is each command's). */
export const sharedFlags: Record<'url' | 'token' | 'data-dir' | 'json' | 'help', FlagSpec> = {
  url: { type: 'string', value: 'URL', description: "the daemon's API (default HIVEMESH_URL, else http://127.0.0.1:7420, or the port in HIVEMESH_API_PORT)" },
  token: { type: 'string', value: 'TOKEN', description: 'a bearer token (default HIVEMESH_TOKEN, else the admin token in <data-dir>/admin.token)' },
  'data-dir': { type: 'string', value: 'D', description: 'where to find the local admin token (default HIVEMESH_DATA_DIR, else ~/.hivemesh)' },
  json: { type: 'boolean', description: 'machine-readable output' },
  help: { type: 'boolean', short: 'h', description: 'this help' },
};

const alternatives = (values: readonly string[]): string => values.join('|');

function duration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms % 1_000 === 0) return `${ms / 1_000} s`;
  return `${ms} ms`;
}

export const commands = {
  status: {
    summary: 'the cluster as the answering node sees it',
    usage: ['status'],
    description: [
      (facts) => `Prints the cluster id; the answering node, its id and raft role; the leader; term, commit and applied index; voters and learners; nodes by state (${facts.memberStates.join(', ')}); tasks by status (${facts.taskStatuses.join(', ')}); versions and the cluster key fingerprint; the node's listen addresses; and any alerts.`,
      (facts) => `Any token may read it (${facts.rolesThatCan('read')}).`,
    ],
    flags: {},
    talksToDaemon: true,
    json: 'the status as JSON (GET /api/status/cluster)',
    examples: ['hivemesh status', 'hivemesh status --url http://192.168.1.20:7420 --json'],
  },
  nodes: {
    summary: 'every node with its state, raft role, GPUs, models and load',
    usage: ['nodes'],
    description: [
      (facts) => `One row per node the answering node knows: NAME (* marks the node answering), ID, STATE (${alternatives(facts.memberStates)}), ROLE (raft role: ${alternatives(facts.raftRoles)}), API (its URL), GPUS (model and VRAM), MODELS (how many are installed, and those loaded in VRAM; "ollama down" when its Ollama does not answer), LOAD (running/limit +queued generations), SEEN (its last heartbeat).`,
      (facts) => `Any token may read it (${facts.rolesThatCan('read')}).`,
    ],
    flags: {},
    talksToDaemon: true,
    json: 'the node list as GET /api/status/agents gives it: {"nodes": [...]}, each node with its hardware, models, agents and capabilities',
    examples: ['hivemesh nodes', 'hivemesh nodes --json'],
  },
  submit: {
    summary: 'submit a task to the cluster',
    usage: ['submit [--model M] [--capability C] [--wait | --follow] [--priority N] [--title T] [--system S] [--depends-on ID]... [--timeout-ms N] [--max-attempts N] [--idempotency-key K] PROMPT...|-'],
    description: [
      'The leader queues the task and places it on a node that can run it. Without --wait or --follow the command prints the new task\'s id and returns at once; `hivemesh task ID` shows it later.',
      'The prompt is the words after the flags, joined by spaces. `-` reads it from stdin, and so does no prompt at all when stdin is not a terminal.',
      'At least one of --model and --capability is needed. When no live node has the model or capability, the command warns and the task waits until one does. A submit answered 503 (no leader during an election) is retried with the same idempotency key, so it never makes two tasks.',
      (facts) => `Needs a token that may submit (${facts.rolesThatCan('submit')}).`,
    ],
    flags: {
      model: { type: 'string', value: 'M', description: 'the Ollama model to run, as `hivemesh nodes --json` lists them (e.g. llama3.2:3b)' },
      capability: { type: 'string', value: 'C', description: "run on an agent that offers capability C, with the agent's model. Given with --model, only an agent with capability C on model M runs it" },
      wait: { type: 'boolean', description: 'wait until the task finishes and print its output (the id goes to stderr); exit 1 if it failed or was cancelled. Not with --follow' },
      follow: { type: 'boolean', description: 'like --wait, but stream the text as it is generated: to stdout on a terminal; else to stderr, and stdout gets the final output once. Not with --wait' },
      priority: { type: 'string', value: 'N', description: `${limits.taskPriorityMin}..${limits.taskPriorityMax}, higher runs first (default ${limits.taskPriorityDefault})` },
      title: { type: 'string', value: 'T', description: `a short name, shown by \`hivemesh tasks\` (at most ${limits.taskTitleLengthMax} characters)` },
      system: { type: 'string', value: 'S', description: `the system prompt (at most ${limits.systemPromptLengthMax} characters)` },
      'depends-on': { type: 'string', multiple: true, value: 'ID', description: `start only once task ID has completed (the task fails if ID fails or is cancelled); repeatable, at most ${limits.taskDependsOnMax}. The prompt may use {{tasks.ID.output}}` },
      'timeout-ms': { type: 'string', value: 'N', description: `how long one attempt may run, ${limits.taskTimeoutMsMin}..${limits.taskTimeoutMsMax} ms (default ${limits.taskTimeoutMsDefault} = ${duration(limits.taskTimeoutMsDefault)})` },
      'max-attempts': { type: 'string', value: 'N', description: `attempts before the task fails, 1..${limits.taskMaxAttemptsMax} (default ${limits.taskMaxAttemptsDefault}); a failed or lost attempt is retried after a backoff` },
      'idempotency-key': { type: 'string', value: 'K', description: `submits with the same key give the same task, not a second one (default: a new cli-<uuid> each run; at most ${limits.idempotencyKeyLengthMax} characters)` },
    },
    talksToDaemon: true,
    json: 'the submitted task as JSON; with --wait or --follow, the finished task (the text streams to stderr)',
    examples: [
      'hivemesh submit --model llama3.2:3b "Write a haiku about GPUs"',
      'git diff | hivemesh submit --capability code-review --priority 8 --follow -',
    ],
  },
  tasks: {
    summary: 'list tasks, newest first',
    usage: ['tasks [--status S] [--limit N] [--cursor C]'],
    description: [
      'One row per task: ID, STATUS, MODEL (cap:C for a capability task), PRI, NODE (by name, as `hivemesh nodes` shows it), TRY (attempt), CREATED, NOTE (its title and, for a queued task, why it waits: "TITLE — waits: REASON"; else its title or error). On a terminal a long NOTE is cut to the line, the title before the reason. When there are more, the last line is the command for the next page.',
      (facts) => `Any token may read them (${facts.rolesThatCan('read')}).`,
    ],
    flags: {
      status: { type: 'string', value: 'S', description: (facts) => `only tasks in this status: ${alternatives(facts.taskStatuses)}` },
      limit: { type: 'string', value: 'N', description: `tasks per page, 1..${limits.listLimitMax} (default ${limits.listLimitDefault}); a page of large outputs may hold fewer` },
      cursor: { type: 'string', value: 'C', description: 'the page after a previous one: its cursor, as its "more: hivemesh tasks --cursor C" line gives it' },
    },
    talksToDaemon: true,
    json: 'the page as JSON: {"tasks": [...], "nextCursor": C or null}',
    examples: ['hivemesh tasks --status running', 'hivemesh tasks --status failed --limit 20 --json'],
  },
  task: {
    summary: 'one task with its status, node, attempts, usage and output',
    usage: ['task ID'],
    description: [
      `Prints the task's status (and what a queued task waits for), model, capability and priority, its node and pin, attempts so far and at most, times, token usage and speed, dependencies, each attempt with its node and error, and the output (kept up to ${bytes(limits.taskOutputBytesMax)}; marked when cut).`,
      (facts) => `Any token may read it (${facts.rolesThatCan('read')}).`,
    ],
    flags: {},
    talksToDaemon: true,
    json: 'the task as JSON (GET /api/tasks/ID)',
    examples: ['hivemesh task t_m0abc123xyz', 'hivemesh task t_m0abc123xyz --json'],
  },
  cancel: {
    summary: 'cancel a task (aborts a running generation)',
    usage: ['cancel ID'],
    description: [
      (facts) => `A task that has not finished (${facts.taskStatuses.filter((status) => !facts.finishedStatuses.includes(status)).join(', ')}) becomes cancelled, a running generation is aborted, and tasks that depend on it fail. A finished task (${facts.finishedStatuses.join(', ')}) cannot be cancelled. Prints "task ID cancelled".`,
      (facts) => `Needs a token that may cancel (${facts.rolesThatCan('cancel')}).`,
    ],
    flags: {},
    talksToDaemon: true,
    json: 'the cancelled task as JSON',
    examples: ['hivemesh cancel t_m0abc123xyz'],
  },
  assign: {
    summary: 'pin a queued task to one node',
    usage: ['assign ID NODE'],
    description: [
      'From now on the task runs only on NODE: a node id or name, as `hivemesh nodes` shows them. Only a queued task can be pinned. A dead node is refused and the command fails, since the task would wait for a node that may never come back. When NODE cannot run the task yet (it is suspect, or lacks the model), the pin is taken, the command warns, and the task waits until that changes.',
      (facts) => `Needs a token that may assign (${facts.rolesThatCan('assign')}).`,
    ],
    flags: {},
    talksToDaemon: true,
    json: 'the pinned task as JSON',
    examples: ['hivemesh assign t_m0abc123xyz gpu-box-2'],
  },
  token: {
    summary: 'create, list and revoke bearer tokens',
    usage: ['token create --role ROLE --name NAME', 'token list', 'token revoke ID'],
    description: [
      '`create` prints a new token once: it cannot be shown again. Only its hash is replicated, and it works on every node. `list` shows each token\'s id, name, role, and when it was created and revoked. `revoke ID` revokes one (ids as `token list` shows them).',
      (facts) => `Roles: ${facts.rolePermissions}.`,
      (facts) => `Needs a token that may manage tokens (${facts.rolesThatCan('manageTokens')}).`,
    ],
    flags: {
      role: { type: 'string', value: 'ROLE', description: (facts) => `for create: ${alternatives(facts.roles)}` },
      name: { type: 'string', value: 'NAME', description: `for create: who or what the token is for (at most ${limits.tokenNameLengthMax} characters)` },
    },
    talksToDaemon: true,
    json: 'the created token, the list, or the revoked token as JSON',
    examples: ['hivemesh token create --role operator --name ci-runner', 'hivemesh token revoke tok_0123456789abcdef'],
  },
  version: {
    summary: 'the version of this command',
    usage: ['version [--json]'],
    description: [`Prints "hivemesh ${SOFTWARE_VERSION}". It asks no daemon: \`hivemesh status\` shows a daemon's version.`],
    flags: {},
    talksToDaemon: false,
    json: 'the software and protocol versions as JSON',
    examples: ['hivemesh version --json'],
  },
} satisfies Record<string, CommandSpec>;

export type ClientCommand = keyof typeof commands;
/** Every command, as `hivemesh help` accepts them. */
export const commandNames: readonly string[] = ['start', ...Object.keys(commands)];

export function isClientCommand(name: string): name is ClientCommand {
  return Object.hasOwn(commands, name);
}

const width = 92;

/**
 * The words in lines of at most `width` characters, the first indented by `firstIndent`,
 * the rest by `indent`.
 */
function wrap(words: readonly string[], indent: number, firstIndent = indent): string {
  const lines: string[] = [];
  let line = ' '.repeat(firstIndent);
  let lineIndent = firstIndent;
  for (const word of words) {
    if (line.length > lineIndent && line.length + 1 + word.length > width) {
      lines.push(line);
      line = ' '.repeat(indent);
      lineIndent = indent;
    }
    line += line.length > lineIndent ? ` ${word}` : word;
  }
  lines.push(line);
  return lines.join('\n');
}

const wordsOf = (text: string): string[] => text.split(/\s+/);
/** A synopsis breaks between its words and [bracketed groups], never inside a group. */
const synopsisWordsOf = (text: string): string[] => text.match(/\[[^\]]*\](?:\.\.\.)?|\S+/g) ?? [];

const flagName = (name: string, flag: FlagSpec): string => `${flag.short === undefined ? '' : `-${flag.short}, `}--${name}${flag.value === undefined ? '' : ` ${flag.value}`}`;

/** Flags with their descriptions starting at `column`. */
function flagLines(flags: Array<[string, FlagSpec]>, column: number, facts: ProtocolFacts): string {
  return flags.map(([name, flag]) => wrap(wordsOf(textOf(flag.description, facts)), column).replace(/^ */, `  ${flagName(name, flag)}`.padEnd(column))).join('\n');
}

/** The help of one client command, as `hivemesh <command> --help` prints it. */
export function commandHelp(name: ClientCommand, facts: ProtocolFacts): string {
  const spec: CommandSpec = commands[name];
  const shared: Array<[string, FlagSpec]> = spec.talksToDaemon
    ? [['url', sharedFlags.url], ['token', sharedFlags.token], ['data-dir', sharedFlags['data-dir']], ['json', { ...sharedFlags.json, description: spec.json }], ['help', sharedFlags.help]]
    : [['json', { ...sharedFlags.json, description: spec.json }], ['help', sharedFlags.help]];
  const own = Object.entries(spec.flags);
  // Own and shared flags line up in one column.
  const column = Math.max(...[...own, ...shared].map(([flag, flagSpec]) => flagName(flag, flagSpec).length)) + 4;
  const sections = [
    `hivemesh ${name}: ${spec.summary}`,
    // A long synopsis goes on below the command's name.
    `Usage:\n${spec.usage.map((line) => wrap(synopsisWordsOf(`hivemesh ${line}`), `  hivemesh ${name} `.length, 2)).join('\n')}`,
    spec.description.map((paragraph) => wrap(wordsOf(textOf(paragraph, facts)), 0)).join('\n\n'),
  ];
  if (own.length > 0) sections.push(`Flags:\n${flagLines(own, column, facts)}`);
  sections.push(`${spec.talksToDaemon ? 'Options for talking to a daemon' : 'Options'}:\n${flagLines(shared, column, facts)}`);
  sections.push(`Example${spec.examples.length > 1 ? 's' : ''}:\n${spec.examples.map((example) => `  ${example}`).join('\n')}`);
  if (spec.talksToDaemon) sections.push(wrap(wordsOf('Exit status: 0 done, 1 failed or refused, 2 wrong usage, 3 token missing, wrong or not allowed.'), 0));
  return sections.join('\n\n');
}

/** parseArgs options for a client command: its own flags and the shared ones. */
export function parseOptionsOf(name: ClientCommand): Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {};
  for (const [flag, spec] of [...Object.entries(sharedFlags), ...Object.entries(commands[name].flags as Record<string, FlagSpec>)]) {
    options[flag] = { type: spec.type, ...(spec.multiple === undefined ? {} : { multiple: spec.multiple }), ...(spec.short === undefined ? {} : { short: spec.short }) };
  }
  return options;
}

/** `hivemesh --help`: every command in short. */
export function generalUsage(facts: ProtocolFacts): string {
  return `hivemesh ${SOFTWARE_VERSION}: run LLM agents across the GPU machines of a LAN

Usage:
  hivemesh start [--config F] [--data-dir D] [--name N] [--api-host H] [--api-port P]
                 [--p2p-port P] [--ollama-url U] [--secret-file F]
                 [--bootstrap MULTIADDR]... [--no-mdns]      run the daemon on this machine
  hivemesh status                     the cluster as this node sees it
  hivemesh nodes                      every node: state, role, GPUs, models, load
  hivemesh submit [--model M | --capability C] [--wait | --follow] [--priority ${limits.taskPriorityMin}..${limits.taskPriorityMax}]
                  [--title T] [--system S] [--depends-on ID]... [--timeout-ms N]
                  [--max-attempts N] [--idempotency-key K] PROMPT|-
                                      submit a task (prints its id; --wait prints the
                                      result, --follow streams tokens as they come)
  hivemesh tasks [--status S] [--limit N] [--cursor C]   list tasks, newest first
  hivemesh task ID                    one task: status, node, attempts, usage, output
  hivemesh cancel ID                  cancel a task (aborts a running generation)
  hivemesh assign ID NODE             pin a queued task to a node (id or name)
  hivemesh token create --role ${alternatives(facts.roles)} --name NAME
  hivemesh token list | hivemesh token revoke ID
  hivemesh version                    the version of this command

Options for the commands that talk to a daemon:
  --url URL        the daemon's API (default http://127.0.0.1:7420, or HIVEMESH_URL)
  --token TOKEN    a bearer token (default HIVEMESH_TOKEN, else <data-dir>/admin.token)
  --data-dir D     where to find the local admin token (default ~/.hivemesh)
  --json           machine-readable output

Run \`hivemesh start --help\` for every daemon setting.
Run \`hivemesh <command> --help\` for one command's flags.`;
}
