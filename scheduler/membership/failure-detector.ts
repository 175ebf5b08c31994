// The failure detector: a pure state machine that turns "when did we last hear from
// each peer" into alive -> suspect -> dead, plus left for peers that said goodbye.
// Time arrives as nowMs arguments (a monotonic clock the daemon reads), so tests and
// the simulator drive it with any schedule they like. A peer the caller still needs
// (membership passes the nodes the consensus configuration names) is kept past its
// forget time instead of dropped, so the node list never loses a voter it depends on.

export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';

export interface FailureDetectorOptions {
  /** Silence after which an alive peer becomes suspect. */
  suspectAfterMs: number;
  /** Silence after which a peer is dead; must exceed suspectAfterMs. */
  deadAfterMs: number;
  /** Silence after which a dead peer's entry is dropped altogether. */
  forgetAfterMs: number;
  /** A peer that left on purpose is shown as left this long, then dropped. */
  forgetLeftAfterMs: number;
  /** Most peers tracked at once; observations of new peers beyond it are refused. */
  peersMax: number;
  /**
   * Peers for which this answers true are never forgotten nor evicted: past their forget
   * time they stay (dead or left, marked `kept`) until it answers false, and the next
   * evaluate() forgets them then. Asked only about peers whose forget time is up, and
   * when the table is full.
   */
  keep?: (peer: string) => boolean;
}

export interface Transition {
  peer: string;
  /** null when the peer was not known before (a join). */
  from: MemberState | null;
  /** 'forgotten' when the entry was dropped. */
  to: MemberState | 'forgotten';
  atMs: number;
}

interface Entry {
  state: MemberState;
  lastSeenMs: number;
  /** When the peer entered its current state. */
  sinceMs: number;
  /** Past its forget time, held only by options.keep. */
  kept: boolean;
}

export class FailureDetector {
  readonly options: Readonly<FailureDetectorOptions>;
  readonly #entries = new Map<string, Entry>();

  constructor(options: FailureDetectorOptions) {
    if (!(options.suspectAfterMs > 0 && options.deadAfterMs > options.suspectAfterMs)) {
      throw new RangeError(`failure detector thresholds must satisfy 0 < suspectAfterMs (${options.suspectAfterMs}) < deadAfterMs (${options.deadAfterMs})`);
    }
    if (!(options.forgetAfterMs >= options.deadAfterMs)) {
      throw new RangeError(`forgetAfterMs (${options.forgetAfterMs}) must be at least deadAfterMs (${options.deadAfterMs})`);
    }
    if (!(options.forgetLeftAfterMs >= 0) || !(options.peersMax >= 1)) {
      throw new RangeError('forgetLeftAfterMs must be >= 0 and peersMax >= 1');
    }
    this.options = { ...options };
  }

  /**
   * Records news from a peer. Returns the transition it caused (a join, or a suspect,
   * dead or left peer coming back), or null when the peer was already alive. Returns
   * null without tracking when the table is full of live peers; see `isFull()`.
   */
  observe(peer: string, nowMs: number): Transition | null {
    const entry = this.#entries.get(peer);
    if (entry === undefined) {
      if (this.#entries.size >= this.options.peersMax && !this.#evictOne()) return null;
      this.#entries.set(peer, { state: 'alive', lastSeenMs: nowMs, sinceMs: nowMs, kept: false });
      return { peer, from: null, to: 'alive', atMs: nowMs };
    }
    // A clock that goes backwards (it should not: the daemon passes a monotonic one)
    // must not make a peer look fresher than it is, nor older.
    entry.lastSeenMs = Math.max(entry.lastSeenMs, nowMs);
    entry.kept = false;
    if (entry.state === 'alive') return null;
    const from = entry.state;
    entry.state = 'alive';
    entry.sinceMs = nowMs;
    return { peer, from, to: 'alive', atMs: nowMs };
  }

  /** The peer announced its departure: it is left at once, with no suspect period. */
  markLeft(peer: string, nowMs: number): Transition | null {
    const entry = this.#entries.get(peer);
    if (entry === undefined || entry.state === 'left') return null;
    const from = entry.state;
    entry.state = 'left';
    entry.sinceMs = nowMs;
    entry.kept = false;
    return { peer, from, to: 'left', atMs: nowMs };
  }

  /** Drops a peer without a transition (for example when it is removed from the cluster). */
  remove(peer: string): boolean {
    return this.#entries.delete(peer);
  }

  /** Advances time: returns every state change due at nowMs, in table order. */
  evaluate(nowMs: number): Transition[] {
    const transitions: Transition[] = [];
    for (const [peer, entry] of this.#entries) {
      const silentMs = nowMs - entry.lastSeenMs;
      if (entry.state === 'left') {
        if (nowMs - entry.sinceMs >= this.options.forgetLeftAfterMs) {
          entry.kept = this.#keeps(peer);
          if (entry.kept) continue;
          this.#entries.delete(peer);
          transitions.push({ peer, from: 'left', to: 'forgotten', atMs: nowMs });
        }
        continue;
      }
      if (silentMs >= this.options.forgetAfterMs) {
        entry.kept = this.#keeps(peer);
        if (!entry.kept) {
          // A peer can go from alive to forgotten in one evaluation when the caller was
          // away for long; report the dead step too so listeners see the full story.
          if (entry.state !== 'dead') transitions.push({ peer, from: entry.state, to: 'dead', atMs: nowMs });
          this.#entries.delete(peer);
          transitions.push({ peer, from: 'dead', to: 'forgotten', atMs: nowMs });
          continue;
        }
      }
      const target: MemberState = silentMs >= this.options.deadAfterMs ? 'dead' : silentMs >= this.options.suspectAfterMs ? 'suspect' : 'alive';
      // Only silence moves a peer down; only observe() moves it up.
      if (rank(target) > rank(entry.state)) {
        transitions.push({ peer, from: entry.state, to: target, atMs: nowMs });
        entry.state = target;
        entry.sinceMs = nowMs;
      }
    }
    return transitions;
  }

  state(peer: string): MemberState | undefined {
    return this.#entries.get(peer)?.state;
  }

  lastSeenMs(peer: string): number | undefined {
    return this.#entries.get(peer)?.lastSeenMs;
  }

  /** Every tracked peer; `kept` ones are past their forget time, held by options.keep. */
  peers(): Array<{ peer: string; state: MemberState; lastSeenMs: number; sinceMs: number; kept: boolean }> {
    return [...this.#entries].map(([peer, entry]) => ({ peer, ...entry }));
  }

  get size(): number {
    return this.#entries.size;
  }

  isFull(): boolean {
    return this.#entries.size >= this.options.peersMax;
  }

  #keeps(peer: string): boolean {
    return this.options.keep?.(peer) ?? false;
  }

  /** Makes room by dropping the longest-silent left or dead peer not kept; false when none is. */
  #evictOne(): boolean {
    let victim: string | null = null;
    let victimSeenMs = Infinity;
    for (const [peer, entry] of this.#entries) {
      if ((entry.state === 'left' || entry.state === 'dead') && entry.lastSeenMs < victimSeenMs && !this.#keeps(peer)) {
        victim = peer;
        victimSeenMs = entry.lastSeenMs;
      }
    }
    if (victim === null) return false;
    this.#entries.delete(victim);
    return true;
  }
}

function rank(state: MemberState): number {
  return state === 'alive' ? 0 : state === 'suspect' ? 1 : state === 'dead' ? 2 : 3;
}
