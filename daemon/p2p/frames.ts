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
  if (!stream.send(lp.encode.single(bytes))) {
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
