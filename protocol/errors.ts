// Error codes a client can rely on (the `code` of the HTTP error body), and the
// error classes the code base throws for expected failures. Bugs are not errors of
// these kinds: they crash.

export const ErrorCode = {
  invalidInput: 'invalid_input',
  unauthorized: 'unauthorized',
  forbidden: 'forbidden',
  notFound: 'not_found',
  conflict: 'conflict',
  payloadTooLarge: 'payload_too_large',
  rateLimited: 'rate_limited',
  noLeader: 'no_leader',
  noQuorum: 'no_quorum',
  unavailable: 'unavailable',
  internal: 'internal',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export const httpStatusOf: Record<ErrorCode, number> = {
  invalid_input: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  rate_limited: 429,
  no_leader: 503,
  no_quorum: 503,
  unavailable: 503,
  internal: 500,
};

/** An expected failure with a stable code, a message for people and optional details. */
export class HivemeshError extends Error {
  override name = 'HivemeshError';
  readonly code: ErrorCode;
  readonly details: unknown;
  /** Seconds a client should wait before retrying (429 and 503). */
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, message: string, options: { details?: unknown; retryAfterSeconds?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

/** A message from the network that is malformed, oversized or of another version. */
export class DecodeError extends Error {
  override name = 'DecodeError';
}

/**
 * A write the log committed that this node has not applied within its wait (it lags: just
 * restarted, or overloaded). Not lost: the answer says so, so that a client reads it back
 * instead of sending it a second time.
 */
export function committedNotAppliedError(what: string, index: number, cause: unknown): HivemeshError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new HivemeshError(ErrorCode.unavailable,
    `${what} was committed (log index ${index}), but this node has not caught up to it yet (${reason}); it is not lost: read it back in a moment, or through another node, instead of sending it again`,
    { retryAfterSeconds: 1 });
}

