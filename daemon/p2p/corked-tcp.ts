// libp2p's TCP transport with one write syscall per turn of the event loop per connection.
// Every libp2p frame (a yamux frame, noise-encrypted) is its own `socket.write`, and yamux
// follows each data frame with a window update: a Raft append, a relayed batch and their
// answers are several writes each. On loopback and LAN a write costs a syscall that runs
// the whole TCP path, and under load the leader spent more time in `writeBuffer` than in
// anything else (scripts/bench/FINDINGS.md, finding 2). Here the socket is corked at its
// first write of a turn and uncorked in `setImmediate`, so a turn's frames leave in one
// `writev`. Nothing is reordered or held past the current turn; backpressure still works
// (a corked `write` returns false past the high-water mark and 'drain' follows the flush).
import type { Socket } from 'node:net';
import { tcp, type TCPOptions } from '@libp2p/tcp';

type TcpFactory = ReturnType<typeof tcp>;
type TcpTransport = ReturnType<TcpFactory>;
type Upgrader = Parameters<TcpTransport['dial']>[1]['upgrader'];

const corked = Symbol('hivemesh.corkedPerTurn');

/** Makes a socket gather the writes of one event-loop turn into one syscall. */
export function corkPerTurn(socket: Socket): void {
  const target = socket as Socket & { [corked]?: boolean };
  if (target[corked] === true) return;
  target[corked] = true;
  let pending = false;
  const uncork = () => {
    pending = false;
    if (!socket.destroyed) socket.uncork();
  };
  const write = socket.write;
  socket.write = function corkedWrite(this: Socket, ...args: Parameters<Socket['write']>): boolean {
    if (!pending && !socket.destroyed && !socket.writableEnded) {
      pending = true;
      socket.cork();
      setImmediate(uncork);
    }
    return write.apply(this, args);
  } as Socket['write'];
}

function socketOf(connection: unknown): Socket | null {
  const socket = (connection as { socket?: unknown }).socket;
  return socket !== null && typeof socket === 'object' && typeof (socket as Socket).cork === 'function' ? socket as Socket : null;
}

function corkingUpgrader(upgrader: Upgrader): Upgrader {
  return new Proxy(upgrader, {
    get(target, property) {
      if (property === 'upgradeInbound' || property === 'upgradeOutbound') {
        const upgrade = target[property] as (connection: unknown, options: unknown) => Promise<unknown>;
        return (connection: unknown, options: unknown) => {
          const socket = socketOf(connection);
          if (socket !== null) corkPerTurn(socket);
          return upgrade.call(target, connection, options);
        };
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** `tcp()` whose connections (dialled and accepted) write once per event-loop turn. */
export function corkedTcp(init?: TCPOptions): TcpFactory {
  const factory = tcp(init);
  return (components) => {
    const transport = factory(components);
    const dial = transport.dial.bind(transport);
    transport.dial = (address, options) => dial(address, { ...options, upgrader: corkingUpgrader(options.upgrader) });
    const createListener = transport.createListener.bind(transport);
    transport.createListener = (options) => createListener({ ...options, upgrader: corkingUpgrader(options.upgrader) });
    return transport;
  };
}
