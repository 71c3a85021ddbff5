import { describe, expect, it } from "vitest";
import { LazyOrder } from "../../src/domain/lazy-order";
import { mulberry32 as random } from "../support/helpers";

interface Item { id: string; score: number }
/** Highest score first, then by id: a total order, as the fair order's own. */
const before = (a: Item, b: Item) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

function items(n: number, seed: number, distinct: number): Item[] {
  const rnd = random(seed);
  return Array.from({ length: n }, (_, i) => ({ id: `r${String(i).padStart(5, "0")}`, score: Math.floor(rnd() * distinct) }));
}

describe("LazyOrder", () => {
  it("gives exactly a full sort's order, whatever the size and however many ties", () => {
    for (const [n, distinct, seed] of [[0, 1, 1], [1, 1, 2], [2, 2, 3], [7, 3, 4], [100, 5, 5], [1000, 1000, 6], [5000, 4, 7]] as const) {
      const list = items(n, seed, distinct);
      const sorted = [...list].sort(before).map((i) => i.id);
      const order = new LazyOrder([...list], before);
      expect(order.size).toBe(n);
      const taken: string[] = [];
      for (let item = order.peek(); item; item = order.peek()) expect(order.shift()).toBe(item), taken.push(item.id);
      expect(taken).toEqual(sorted);
      expect(order.size).toBe(0);
      expect(order.shift()).toBeUndefined();
    }
  });

  it("taken part-way, leaves exactly the rest (in any order)", () => {
    const list = items(2000, 11, 50);
    const sorted = [...list].sort(before).map((i) => i.id);
    const order = new LazyOrder([...list], before);
    const head = Array.from({ length: 128 }, () => order.shift()!.id);
    expect(head).toEqual(sorted.slice(0, 128));
    expect(order.rest().map((i) => i.id).sort()).toEqual(sorted.slice(128).sort());
    // rest() is a copy: taking on goes on in order.
    expect(order.shift()!.id).toBe(sorted[128]);
  });
});
