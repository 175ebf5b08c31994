// Length-prefixed frames on libp2p 3 streams, and the named errors of the p2p layer.
// libp2p 3 streams are message streams: `send()` returns false when the write buffer
// is full (then wait for drain), and the stream itself is the async iterable to read.
import * as lp from 'it-length-prefixed';
import type { Stream } from '@libp2p/interface';

/** The peer could not be reached, or no longer speaks the protocol. */
export class PeerUnreachableError extends Error {
  override name = 'PeerUnreachableError';
  readonly peerId: string;
  constructor(peerId: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.peerId = peerId;
  }
}

/** The request did not finish within its timeout. */
export class RequestTimeoutError extends Error {
  override name = 'RequestTimeoutError';
}

/** A frame to send or received is larger than the frame bound. */
export class FrameTooLargeError extends Error {
  override name = 'FrameTooLargeError';
}

/** The remote aborted the request (its handler failed) or the stream broke midway. */
export class RequestFailedError extends Error {
  override name = 'RequestFailedError';
}

/** The host is stopping or stopped. */
export class HostStoppedError extends Error {
  override name = 'HostStoppedError';
  constructor() {
    super('the p2p host is stopped');
  }
}

export function assertFrameSize(bytes: Uint8Array, frameBytesMax: number, what: string): void {
  if (bytes.byteLength > frameBytesMax) {
    throw new FrameTooLargeError(`${what} is ${bytes.byteLength} bytes, over the ${frameBytesMax}-byte frame limit; split it or send less at once`);
  }
}

/** Writes one frame, waiting for the stream to drain when its buffer is full. */
export async function writeFrame(stream: Stream, bytes: Uint8Array, frameBytesMax: number, signal?: AbortSignal): Promise<void> {
  assertFrameSize(bytes, frameBytesMax, 'a frame');
  // it-length-prefixed refuses to encode more than 4 MiB unless told the bound.
  if (!stream.send(lp.encode.single(bytes, { maxDataLength: frameBytesMax }))) {
    await stream.onDrain(signal === undefined ? undefined : { signal });
  }
}

/** Reads frames until the remote closes its side; a frame over the bound throws FrameTooLargeError. */
export async function* readFrames(stream: Stream, frameBytesMax: number): AsyncGenerator<Uint8Array> {
  try {
    for await (const frame of lp.decode(stream, { maxDataLength: frameBytesMax })) {
      yield frame.subarray();
    }
  } catch (error) {
    const name = (error as Error).name;
    if (name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError') {
      throw new FrameTooLargeError(`the peer sent a frame over the ${frameBytesMax}-byte limit on ${stream.protocol}`, { cause: error });
    }
    throw error;
  }
}

/**
 * A message larger than a frame goes as a header frame, a zero byte and the total length
 * (no message starts with a zero byte: they are JSON), followed by frames of its bytes in
 * order. On one ordered stream nothing comes between them.
 */
const fragmentHeaderBytes = 9;

export function fragmentHeader(total: number): Uint8Array {
  const header = new Uint8Array(fragmentHeaderBytes);
  const view = new DataView(header.buffer);
  view.setUint32(1, Math.floor(total / 2 ** 32));
  view.setUint32(5, total >>> 0);
  return header;
}

/** The total length a fragment header announces, or null when the frame is a whole message. */
export function fragmentTotal(frame: Uint8Array): number | null {
  if (frame.byteLength !== fragmentHeaderBytes || frame[0] !== 0) return null;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  return view.getUint32(1) * 2 ** 32 + view.getUint32(5);
}

/** Writes a message as a header and pieces of `fragmentBytes`, each waiting for the stream to drain. */
export async function writeFragmented(stream: Stream, bytes: Uint8Array, fragmentBytes: number, frameBytesMax: number, signal?: AbortSignal): Promise<void> {
  await writeFrame(stream, fragmentHeader(bytes.byteLength), frameBytesMax, signal);
  for (let offset = 0; offset < bytes.byteLength; offset += fragmentBytes) {
    await writeFrame(stream, bytes.subarray(offset, offset + fragmentBytes), frameBytesMax, signal);
  }
}

/**
 * Reassembles messages from frames: whole messages pass through, a fragment header starts
 * collecting its pieces. A message over `messageBytesMax`, or pieces that overrun what
 * the header announced, end the stream with FrameTooLargeError.
 */
export async function* readMessages(stream: Stream, frameBytesMax: number, messageBytesMax: number): AsyncGenerator<Uint8Array> {
  let pending: { buffer: Uint8Array; received: number } | null = null;
  for await (const frame of readFrames(stream, frameBytesMax)) {
    if (pending === null) {
      const total = fragmentTotal(frame);
      if (total === null) {
        yield frame;
        continue;
      }
      if (total === 0 || total > messageBytesMax) {
        throw new FrameTooLargeError(`the peer announced a message of ${total} bytes on ${stream.protocol}, over the ${messageBytesMax}-byte limit`);
      }
      pending = { buffer: new Uint8Array(total), received: 0 };
      continue;
    }
    if (pending.received + frame.byteLength > pending.buffer.byteLength) {
      throw new FrameTooLargeError(`the peer sent more than the ${pending.buffer.byteLength} bytes it announced on ${stream.protocol}`);
    }
    pending.buffer.set(frame, pending.received);
    pending.received += frame.byteLength;
    if (pending.received === pending.buffer.byteLength) {
      const message = pending.buffer;
      pending = null;
      yield message;
    }
  }
}
