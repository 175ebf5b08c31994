// Human units for the dashboard: sizes, durations, ages and excerpts. Pure functions, also
// unit-tested from Node (web-ui/format.test.ts).

/** @param {number | null | undefined} value */
export function bytes(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let size = value;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size >= 10 || unit === 0 ? size.toFixed(0) : size.toFixed(1)} ${units[unit]}`;
}

/** A duration in ms, short: 850 ms, 4.2 s, 3 min 5 s, 2 h 10 min, 3 d 4 h. @param {number} ms */
export function duration(ms) {
  if (!Number.isFinite(ms)) return '–';
  const sign = ms < 0 ? '-' : '';
  const value = Math.abs(ms);
  if (value < 1_000) return `${sign}${Math.round(value)} ms`;
  if (value < 60_000) return `${sign}${(value / 1_000).toFixed(value < 10_000 ? 1 : 0)} s`;
  if (value < 3_600_000) {
    const minutes = Math.floor(value / 60_000);
    const seconds = Math.floor((value % 60_000) / 1_000);
    return `${sign}${minutes} min${seconds > 0 ? ` ${seconds} s` : ''}`;
  }
  if (value < 86_400_000) {
    const hours = Math.floor(value / 3_600_000);
    const minutes = Math.floor((value % 3_600_000) / 60_000);
    return `${sign}${hours} h${minutes > 0 ? ` ${minutes} min` : ''}`;
  }
  const days = Math.floor(value / 86_400_000);
  const hours = Math.floor((value % 86_400_000) / 3_600_000);
  return `${sign}${days} d${hours > 0 ? ` ${hours} h` : ''}`;
}

/** "4.2 s ago"; clocks of two hosts differ a little, so small negative ages read as "just now". @param {number} ms */
export function ago(ms) {
  if (ms < 1_000) return 'just now';
  return `${duration(ms)} ago`;
}

/** Time until an ISO date, for model expiry: "in 4 min", "expired", "never". @param {string | null} iso @param {number} nowMs */
export function expiresIn(iso, nowMs) {
  if (iso === null) return 'never expires';
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return `expires ${iso}`;
  const left = at - nowMs;
  // Ollama reports far-future dates for keep_alive=-1.
  if (left > 365 * 86_400_000) return 'never expires';
  if (left <= 0) return 'expiring now';
  // Whole minutes above one minute, so the text (and the card showing it) changes rarely.
  return left < 60_000 ? `expires in ${Math.ceil(left / 1_000)} s` : `expires in ${Math.ceil(left / 60_000)} min`;
}

/** Local date and time for a ms timestamp. @param {number | null} ms */
export function dateTime(ms) {
  if (ms === null) return '–';
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? '–' : date.toLocaleString();
}

/** First line of a text, cut to `length` characters with an ellipsis. @param {string} text @param {number} length */
export function excerpt(text, length) {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length <= length ? line : `${line.slice(0, Math.max(1, length - 1))}…`;
}

/** Long ids (libp2p peer ids) shortened for tables; the full id goes in a title. @param {string | null} id */
export function shortId(id) {
  if (id === null) return '–';
  return id.length > 16 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id;
}

/** 0..1 as a percentage. @param {number | null} ratio */
export function percent(ratio) {
  if (ratio === null || !Number.isFinite(ratio)) return '–';
  return `${Math.round(ratio * 100)}%`;
}

/**
 * Only http(s) URLs become links: apiUrl comes from other nodes' heartbeats, and a
 * "javascript:" URL there must not turn into a clickable script.
 * @param {string} url
 * @returns {string | null}
 */
export function safeHttpUrl(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch {
    return null;
  }
}
