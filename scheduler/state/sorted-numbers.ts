// An ascending array of distinct integers with binary-search insert, delete and seek: the
// per-status index of task sequence numbers behind newest-first paging. Splicing is O(n)
// but n is bounded by the task limits (tens of thousands), where a memmove costs less
// than the allocations of a tree.

export class SortedNumbers {
  private readonly values: number[] = [];

  get size(): number {
    return this.values.length;
  }

  /** Index of the first value >= target (values.length when none). */
  lowerBound(target: number): number {
    let low = 0;
    let high = this.values.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.values[middle] as number) < target) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  insert(value: number): void {
    const position = this.lowerBound(value);
    if (this.values[position] === value) throw new Error(`sorted index already holds ${value}`);
    this.values.splice(position, 0, value);
  }

  delete(value: number): void {
    const position = this.lowerBound(value);
    if (this.values[position] !== value) throw new Error(`sorted index does not hold ${value}`);
    this.values.splice(position, 1);
  }

  at(position: number): number {
    const value = this.values[position];
    if (value === undefined) throw new Error(`sorted index position ${position} out of range 0..${this.values.length - 1}`);
    return value;
  }

  /** Ascending copy, for iteration that may modify the index. */
  toArray(): number[] {
    return [...this.values];
  }
}
