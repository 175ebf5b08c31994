// The yamux window patch: a stream grants more window only once half of it is used, not
// after every data frame; handshake states still answer at once (their flags ride along).
import { describe, expect, it } from 'vitest';
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';
import { halfWindowUpdatesInstalled } from './yamux-window.ts';

const window = 256 * 1024;

/** A stream object with only what sendWindowUpdate reads, recording the frames it sends. */
function fakeStream(state: StreamState, capacity: number): { stream: YamuxStream; frames: Array<{ length: number; flag: number }> } {
  const frames: Array<{ length: number; flag: number }> = [];
  const stream = Object.create(YamuxStream.prototype) as YamuxStream;
  Object.assign(stream, {
    state, recvWindow: window, recvWindowCapacity: capacity, maxStreamWindowSize: 16 * 1024 * 1024, epochStart: Date.now(),
    getRTT: () => -1,
    sendFrame: (frame: { header?: { length: number; flag: number }; length?: number; flag?: number }) => {
      frames.push({ length: frame.length ?? frame.header?.length ?? -1, flag: frame.flag ?? frame.header?.flag ?? -1 });
    },
  });
  return { stream, frames };
}

describe('yamux window updates', () => {
  it('is installed by importing the module', () => {
    expect(halfWindowUpdatesInstalled()).toBe(true);
  });

  it('sends nothing while more than half the window is unused', () => {
    const { stream, frames } = fakeStream(StreamState.Established, window - 1_000);
    stream.sendWindowUpdate();
    expect(frames).toEqual([]);
  });

  it('tops the window up once half of it is used', () => {
    const { stream, frames } = fakeStream(StreamState.Established, window / 2 - 1);
    stream.sendWindowUpdate();
    expect(frames).toEqual([{ length: window / 2 + 1, flag: 0 }]);
  });

  it('leaves handshake states to the library, which acknowledges at once', () => {
    const { stream, frames } = fakeStream(StreamState.SYNReceived, window - 10);
    stream.sendWindowUpdate();
    expect(frames).toHaveLength(1);
    expect(frames[0]!.flag).not.toBe(0);
  });
});
