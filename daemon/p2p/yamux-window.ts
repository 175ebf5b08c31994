// Yamux window updates once half the receive window is used, not after every data frame.
// @chainsafe/libp2p-yamux 8 answers each data frame it receives with a window-update frame
// (its check sends whenever the window is not full), so every message on a stream costs
// two frames, two noise encryptions and, across a turn, two writes; Raft appends, relayed
// batches and their answers are small messages on long-lived streams, so half the frames
// on the wire were window updates. Go's yamux (the reference) waits until the unused
// window falls below half; this does the same. Flow control is unchanged: the sender still
// never exceeds the window it was granted, and it is re-granted before it can run dry.
// Applied once, on import, to the library's stream class.
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';

interface WindowFields {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
}

const patched = Symbol.for('hivemesh.yamuxHalfWindowUpdates');
const prototype = YamuxStream.prototype as YamuxStream & { [patched]?: boolean };

if (prototype[patched] !== true) {
  prototype[patched] = true;
  const sendWindowUpdate = prototype.sendWindowUpdate;
  prototype.sendWindowUpdate = function halfWindowUpdate(this: YamuxStream): void {
    const fields = this as unknown as WindowFields;
    // SYN/ACK states carry flags with the update, and a paused stream has its own rule: the library decides.
    const settled = fields.state === StreamState.Established || fields.state === StreamState.Finished;
    if (settled && fields.recvWindowCapacity * 2 >= fields.recvWindow) return;
    sendWindowUpdate.call(this);
  };
}

/** Whether the patch is in place (for tests). */
export function halfWindowUpdatesInstalled(): boolean {
  return prototype[patched] === true;
}
