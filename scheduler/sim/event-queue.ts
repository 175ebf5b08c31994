// The simulator's agenda: a binary min-heap of events ordered by simulated real time, ties
// broken by insertion order so that equal times replay in the same order every run.

export interface Scheduled<T> {
  timeUs: number;
  sequence: number;
  event: T;
}

export class EventQueue<T> {
  private readonly heap: Scheduled<T>[] = [];
  private nextSequence = 0;
  private readonly capacity: number;

  /** `capacity` bounds the agenda; exceeding it is a simulator bug, not a scenario. */
  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get size(): number {
    return this.heap.length;
  }

  push(timeUs: number, event: T): void {
    if (this.heap.length >= this.capacity) {
      throw new Error(`event queue is full (${this.capacity} events): something schedules without bound`);
    }
    const item: Scheduled<T> = { timeUs, sequence: this.nextSequence++, event };
    const heap = this.heap;
    heap.push(item);
    let index = heap.length - 1;
    while (index > 0) {
      const parentIndex = (index - 1) >> 1;
      const parent = heap[parentIndex] as Scheduled<T>;
      if (!before(item, parent)) break;
      heap[index] = parent;
      index = parentIndex;
    }
    heap[index] = item;
  }

  peek(): Scheduled<T> | undefined {
    return this.heap[0];
  }

  pop(): Scheduled<T> | undefined {
    const heap = this.heap;
    const top = heap[0];
    if (top === undefined) return undefined;
    const last = heap.pop() as Scheduled<T>;
    if (heap.length > 0) {
      let index = 0;
      const length = heap.length;
      while (true) {
        const left = 2 * index + 1;
        if (left >= length) break;
        const right = left + 1;
        let child = left;
        if (right < length && before(heap[right] as Scheduled<T>, heap[left] as Scheduled<T>)) child = right;
        const childItem = heap[child] as Scheduled<T>;
        if (!before(childItem, last)) break;
        heap[index] = childItem;
        index = child;
      }
      heap[index] = last;
    }
    return top;
  }
}

function before<T>(a: Scheduled<T>, b: Scheduled<T>): boolean {
  return a.timeUs < b.timeUs || (a.timeUs === b.timeUs && a.sequence < b.sequence);
}
