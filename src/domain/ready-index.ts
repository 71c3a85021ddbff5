/**
 * The queued requests of a scheduler shard, kept the way a dispatch pass reads them: each client's
 * ready requests in groups of equal tier, tier points and queue, each group in ready-time order (then
 * id), and the requests held back (`not_before` still ahead) in a heap by that time, moved into their
 * group when it comes. A pass then merges the heads of each client's groups (./priority.ts fairIdsOf)
 * instead of scoring and heaping the whole ready backlog: its cost follows the clients and what it
 * takes, not the backlog (a 60,000-request drain spent a tenth of its CPU ranking at every pass).
 *
 * Why a group needs no re-sorting as time passes: within it, tier and queue points are equal and wait
 * points never fall as the wait grows, so an earlier ready time never scores lower, and ownOrder breaks
 * the ties by ready time then id. So each group is already in its client's own order at any `now`, and
 * merging the groups' heads by ownOrder gives exactly the order a full sort gives (tested against
 * fairIds). Removal is lazy: an entry is live while the index maps its id to it; dead ones are skipped,
 * dropped from a group's head as they are met, and compacted away when they outnumber the live ones.
 */
import { ownOrder, readyOf, scoredAt, type FairItem, type OwnOrder, type Scored } from "./priority";

/** What the index needs of a queued request. */
export interface ReadyItem extends FairItem {
  notBefore: number;
  tierPoints?: number;
}

interface Entry<T> {
  item: T;
  /** In its group (ready), else in the held-back heap. */
  ready: boolean;
  group: Group<T> | null;
  /** When it was indexed (a counter): an order being read takes none indexed after it began. */
  seq: number;
}

class Group<T> {
  /**
   * Entries in (ready time, id) order from `start` on (before it: only dead ones, kept until compaction).
   * Only ever appended to: an entry placed before the end, or a compaction, makes a new array, so an
   * order being read (which keeps the array it began with) never sees its entries move.
   */
  entries: Entry<T>[] = [];
  start = 0;
  /** Live entries in it. */
  size = 0;
}

interface Owner<T> {
  groups: Map<string, Group<T>>;
  /** Live requests of this client, ready or held back. */
  count: number;
}

/** Dead entries a group or the heap may carry beyond its live ones before it is compacted. */
const SLACK = 32;

export class ReadyIndex<T extends ReadyItem> {
  private readonly live = new Map<string, Entry<T>>();
  private readonly owners = new Map<string, Owner<T>>();
  /** Held-back entries: a binary min-heap by (notBefore, id); dead ones leave it as they reach the top. */
  private held: Entry<T>[] = [];
  private readyLive = 0;
  private seq = 0;

  /** Requests indexed (ready and held back). */
  get size(): number {
    return this.live.size;
  }

  /** Index a queued request (in place of an earlier entry with its id). */
  add(item: T, now: number): void {
    this.remove(item.id);
    const entry: Entry<T> = { item, ready: false, group: null, seq: ++this.seq };
    this.live.set(item.id, entry);
    let owner = this.owners.get(item.clientId);
    if (!owner) this.owners.set(item.clientId, (owner = { groups: new Map(), count: 0 }));
    owner.count += 1;
    if (item.notBefore <= now) this.place(entry, owner);
    else this.push(entry);
  }

  /** A request left the queue (claimed, finished, cancelled). */
  remove(id: string): void {
    const entry = this.live.get(id);
    if (!entry) return;
    this.live.delete(id);
    const owner = this.owners.get(entry.item.clientId)!;
    owner.count -= 1;
    if (owner.count === 0) this.owners.delete(entry.item.clientId);
    if (entry.ready) {
      this.readyLive -= 1;
      const group = entry.group!;
      group.size -= 1;
      if (group.entries.length - group.size > group.size + SLACK) this.compact(group);
    } else if (this.held.length > 2 * (this.live.size - this.readyLive) + SLACK) {
      this.held = this.held.filter((e) => this.isLive(e));
      for (let i = (this.held.length >> 1) - 1; i >= 0; i -= 1) this.down(i);
    }
  }

  /** Requests that may run at `now`. */
  readyCount(now: number): number {
    this.promote(now);
    return this.readyLive;
  }

  /** The earliest `not_before` still after `now` (held-back work), if any. */
  nextNotBefore(now: number): number | null {
    this.promote(now);
    while (this.held.length && !this.isLive(this.held[0]!)) this.pop();
    return this.held[0]?.item.notBefore ?? null;
  }

  /** The clients with queued requests (ready or held back). */
  clientIds(): IterableIterator<string> {
    return this.owners.keys();
  }

  /**
   * Each client's ready requests in its own order at `now`, read lazily (for fairIdsOf): the requests
   * indexed and ready when it is called, less those removed while it is read (a request queued again
   * meanwhile, e.g. sent back by its admission, waits for the next order: none comes twice).
   */
  orders(now: number): Array<{ clientId: string; order: OwnOrder<T> }> {
    this.promote(now);
    const out: Array<{ clientId: string; order: OwnOrder<T> }> = [];
    const upTo = this.seq;
    for (const [clientId, owner] of this.owners) {
      const groups = [...owner.groups.values()].filter((g) => g.size > 0);
      if (groups.length) out.push({ clientId, order: new Merged(groups, now, upTo, (e) => this.isLive(e)) });
    }
    return out;
  }

  private isLive(entry: Entry<T>): boolean {
    return this.live.get(entry.item.id) === entry;
  }

  /** Move the held-back requests whose time has come into their groups. */
  private promote(now: number): void {
    while (this.held.length && this.held[0]!.item.notBefore <= now) {
      const entry = this.pop();
      if (this.isLive(entry)) this.place(entry, this.owners.get(entry.item.clientId)!);
    }
  }

  /** Put a ready entry into its group, in (ready time, id) order: at the end, unless it was ready earlier than the last. */
  private place(entry: Entry<T>, owner: Owner<T>): void {
    const { item } = entry;
    const key = `${item.tier}\u0000${item.tierPoints ?? ""}\u0000${item.queue}`;
    let group = owner.groups.get(key);
    if (!group) owner.groups.set(key, (group = new Group<T>()));
    const list = group.entries;
    const last = list[list.length - 1];
    if (!last || before(last.item, item)) list.push(entry);
    else {
      // Before the end (a retry ready since long ago): a new array, the dead head left out.
      let lo = group.start;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (before(list[mid]!.item, item)) lo = mid + 1;
        else hi = mid;
      }
      group.entries = [...list.slice(group.start, lo), entry, ...list.slice(lo)];
      group.start = 0;
    }
    entry.ready = true;
    entry.group = group;
    group.size += 1;
    this.readyLive += 1;
  }

  /** Drop a group's dead entries (a new array: an order being read keeps the one it started with). */
  private compact(group: Group<T>): void {
    group.entries = group.entries.slice(group.start).filter((e) => this.isLive(e));
    group.start = 0;
  }

  private push(entry: Entry<T>): void {
    const heap = this.held;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!earlier(heap[i]!.item, heap[parent]!.item)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  private pop(): Entry<T> {
    const heap = this.held;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length) {
      heap[0] = last;
      this.down(0);
    }
    return top;
  }

  private down(i: number): void {
    const heap = this.held;
    for (;;) {
      let least = i;
      for (const child of [2 * i + 1, 2 * i + 2]) if (child < heap.length && earlier(heap[child]!.item, heap[least]!.item)) least = child;
      if (least === i) return;
      [heap[i], heap[least]] = [heap[least]!, heap[i]!];
      i = least;
    }
  }
}

/** A group's order: ready earlier first, then by id. */
function before(a: ReadyItem, b: ReadyItem): boolean {
  const ra = readyOf(a);
  const rb = readyOf(b);
  return ra < rb || (ra === rb && a.id < b.id);
}

/** The held-back heap's order: the earliest `not_before` first, then by id. */
function earlier(a: ReadyItem, b: ReadyItem): boolean {
  return a.notBefore < b.notBefore || (a.notBefore === b.notBefore && a.id < b.id);
}

/** A cursor over one group's array: at `pos`, its entry scored once (`head`) while it is the next. */
interface Cursor<T> {
  group: Group<T>;
  list: Entry<T>[];
  pos: number;
  head: Scored<T> | null;
}

/** One client's groups merged by ownOrder: each group's head scored once, at `now`, as it comes up. */
class Merged<T extends ReadyItem> implements OwnOrder<T> {
  private readonly cursors: Cursor<T>[];
  private best = -1;

  constructor(groups: Group<T>[], private readonly now: number, private readonly upTo: number, private readonly isLive: (e: Entry<T>) => boolean) {
    this.cursors = groups.map((group) => ({ group, list: group.entries, pos: group.start, head: null }));
  }

  /** The best of the groups' heads, found again at each call: a head removed since the last is passed over. */
  peek(): Scored<T> | undefined {
    this.best = -1;
    for (let i = 0; i < this.cursors.length; i++) {
      const head = this.headOf(this.cursors[i]!);
      if (head && (this.best < 0 || ownOrder(head, this.cursors[this.best]!.head!) < 0)) this.best = i;
    }
    return this.best < 0 ? undefined : this.cursors[this.best]!.head!;
  }

  shift(): Scored<T> | undefined {
    const head = this.peek();
    if (head) {
      const cursor = this.cursors[this.best]!;
      cursor.pos += 1;
      cursor.head = null;
    }
    return head;
  }

  /**
   * The cursor's next entry that is live, indexed before this order began and may run at `now`, scored;
   * dead ones at the group's own head leave it.
   */
  private headOf(cursor: Cursor<T>): Scored<T> | null {
    const { group, list } = cursor;
    if (cursor.head) {
      if (this.isLive(list[cursor.pos]!)) return cursor.head;
      cursor.head = null;
    }
    while (cursor.pos < list.length) {
      const entry = list[cursor.pos]!;
      const live = this.isLive(entry);
      if (live && entry.seq <= this.upTo && entry.item.notBefore <= this.now) return (cursor.head = scoredAt(entry.item, this.now));
      if (!live && group.entries === list && group.start === cursor.pos) group.start += 1;
      cursor.pos += 1;
    }
    return null;
  }
}
