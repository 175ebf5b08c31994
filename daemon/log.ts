// Scoped loggers: `logger('p2p')` writes lines like `2026-11-22T01:00:00.000Z info p2p: ...`
// to stderr. Level from HIVEMESH_LOG (error|warn|info|debug; default info). Tests set it
// to `error` to stay quiet.
const levels = { error: 0, warn: 1, info: 2, debug: 3 } as const;
export type LogLevel = keyof typeof levels;

function configuredLevel(): number {
  const name = (process.env.HIVEMESH_LOG ?? 'info').toLowerCase();
  return name in levels ? levels[name as LogLevel] : levels.info;
}

let threshold = configuredLevel();

export function setLogLevel(level: LogLevel): void {
  threshold = levels[level];
}

export interface Logger {
  error(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  debug(message: string, fields?: Record<string, unknown>): void;
  enabled(level: LogLevel): boolean;
}

function format(fields: Record<string, unknown> | undefined): string {
  if (fields === undefined) return '';
  const parts: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    const text = value instanceof Error ? value.message : typeof value === 'string' ? value : JSON.stringify(value);
    parts.push(`${key}=${text}`);
  }
  return parts.length === 0 ? '' : ' ' + parts.join(' ');
}

export function logger(component: string): Logger {
  const write = (level: LogLevel) => (message: string, fields?: Record<string, unknown>) => {
    if (levels[level] > threshold) return;
    process.stderr.write(`${new Date().toISOString()} ${level} ${component}: ${message}${format(fields)}\n`);
  };
  return {
    error: write('error'),
    warn: write('warn'),
    info: write('info'),
    debug: write('debug'),
    enabled: (level) => levels[level] <= threshold,
  };
}
