// groupBy (src/domain/groups.ts): the groups a chunk is split into (by template to launch,
// by client to admit and settle), each in the items' order, the groups in order of first appearance.
import { describe, expect, it } from "vitest";
import { appendTo, groupBy } from "../../src/domain/groups";

describe("groupBy", () => {
  it("keeps each group's items in their order, and the groups in order of first appearance", () => {
    const items = [{ c: "b", n: 1 }, { c: "a", n: 2 }, { c: "b", n: 3 }, { c: "c", n: 4 }, { c: "a", n: 5 }];
    const groups = groupBy(items, (i) => i.c);
    expect([...groups.keys()]).toEqual(["b", "a", "c"]);
    expect([...groups].map(([k, list]) => [k, list.map((i) => i.n)])).toEqual([["b", [1, 3]], ["a", [2, 5]], ["c", [4]]]);
    expect(groupBy([], (i: { c: string }) => i.c).size).toBe(0);
  });

  it("a chunk of one client groups every item once, the same objects", () => {
    const items = Array.from({ length: 512 }, (_, n) => ({ c: "one", n }));
    const groups = groupBy(items, (i) => i.c);
    expect(groups.size).toBe(1);
    const list = groups.get("one")!;
    expect(list).toHaveLength(512);
    expect(list.every((item, i) => item === items[i])).toBe(true);
  });

  it("appendTo adds to the list at a key in place, making it when missing (any key type: shards by number)", () => {
    const byShard = new Map<number, number[]>();
    [2, 0, 2, 1, 2].forEach((shard, i) => appendTo(byShard, shard, i));
    expect([...byShard]).toEqual([[2, [0, 2, 4]], [0, [1]], [1, [3]]]);
    const list = byShard.get(2)!;
    appendTo(byShard, 2, 5);
    expect(byShard.get(2)).toBe(list);
    expect(list).toEqual([0, 2, 4, 5]);
  });
});
