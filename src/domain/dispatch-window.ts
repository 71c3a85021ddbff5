/**
 * The dispatches of a recent window (the fairness window: each client's share of them), counted per
 * second by client and by queue. Its memory follows the window's seconds and the clients dispatched
 * in it, not the dispatches: a list with an entry per dispatch held five minutes of them, about 900,000
 * entries and tens of megabytes in a shard dispatching 3,000 a second, and dropping its head copied it.
 * A dispatch leaves the window within a second after `windowMs` (its whole second leaves at once).
 */
interface Second {
  sec: number;
  clients: Map<string, number>;
  queues: Map<string, number>;
}

export class DispatchWindow {
  /** Seconds with dispatches, oldest first. */
  private seconds: Second[] = [];
  private head = 0;
  private readonly byClient = new Map<string, number>();
  private count = 0;

  constructor(private readonly windowMs: number) {}

  /** A dispatch at `at` (in time order; one earlier than the last second counts in that second). */
  note(at: number, clientId: string, queue: string): void {
    const sec = Math.floor(at / 1000);
    let last = this.seconds.length > this.head ? this.seconds[this.seconds.length - 1] : undefined;
    if (!last || last.sec < sec) this.seconds.push((last = { sec, clients: new Map(), queues: new Map() }));
    last.clients.set(clientId, (last.clients.get(clientId) ?? 0) + 1);
    last.queues.set(queue, (last.queues.get(queue) ?? 0) + 1);
    this.byClient.set(clientId, (this.byClient.get(clientId) ?? 0) + 1);
    this.count += 1;
  }

  /** Dispatches in the window at `now`. */
  total(now: number): number {
    this.prune(now);
    return this.count;
  }

  /** Dispatches per client in the window at `now`. */
  counts(now: number): ReadonlyMap<string, number> {
    this.prune(now);
    return this.byClient;
  }

  /** Dispatches in the last `spanMs` (at most the window), of one queue or of all: the seconds that end after `now - spanMs`. */
  countSince(now: number, spanMs: number, queue?: string): number {
    this.prune(now);
    const from = now - spanMs;
    let n = 0;
    for (let i = this.seconds.length - 1; i >= this.head; i--) {
      const s = this.seconds[i]!;
      if (s.sec * 1000 + 999 <= from) break;
      if (queue === undefined) for (const c of s.queues.values()) n += c;
      else n += s.queues.get(queue) ?? 0;
    }
    return n;
  }

  /** Drop the seconds wholly before `now - windowMs`. */
  private prune(now: number): void {
    const cutoff = now - this.windowMs;
    while (this.head < this.seconds.length && this.seconds[this.head]!.sec * 1000 + 999 <= cutoff) {
      for (const [client, n] of this.seconds[this.head]!.clients) {
        const left = (this.byClient.get(client) ?? 0) - n;
        if (left > 0) this.byClient.set(client, left);
        else this.byClient.delete(client);
        this.count -= n;
      }
      this.head += 1;
    }
    if (this.head > 64 && this.head * 2 > this.seconds.length) {
      this.seconds = this.seconds.slice(this.head);
      this.head = 0;
    }
  }
}
