/**
 * Items in a comparator's order, sorted only as far as they are taken: a binary heap built in linear
 * time, each `shift` costing a logarithm. A dispatch pass ranks the whole ready backlog of a shard but
 * takes only the hundred or so it can launch; sorting every client's list at each pass was a tenth of
 * a drain's CPU (docs/benchmarks.md). The comparator must be a total order (ties broken by id), so the
 * items come out in exactly the order a full sort gives.
 */
export class LazyOrder<T> {
  private readonly heap: T[];

  constructor(items: T[], private readonly before: (a: T, b: T) => number) {
    this.heap = items;
    for (let i = (items.length >> 1) - 1; i >= 0; i -= 1) this.down(i);
  }

  get size(): number {
    return this.heap.length;
  }

  /** The first item still untaken (undefined when every one is taken). */
  peek(): T | undefined {
    return this.heap[0];
  }

  /** Take the first item. */
  shift(): T | undefined {
    const heap = this.heap;
    const first = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last !== undefined) {
      heap[0] = last;
      this.down(0);
    }
    return first;
  }

  /** The items still untaken, in no particular order (the order's tail, for a caller that ranks it otherwise). */
  rest(): T[] {
    return this.heap.slice();
  }

  private down(i: number): void {
    const heap = this.heap;
    const n = heap.length;
    const item = heap[i]!;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && this.before(heap[child + 1]!, heap[child]!) < 0) child += 1;
      if (this.before(heap[child]!, item) >= 0) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = item;
  }
}
