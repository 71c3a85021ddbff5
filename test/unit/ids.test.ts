import { describe, expect, it } from "vitest";
import { ID_PREFIXES, idFloor, newId, timeOrderedId, type IdKind } from "../../src/domain/ids";

describe("time-ordered ids", () => {
  it("keep the shape clients know: prefix_ and 32 lowercase hex digits, the first 12 the millisecond", () => {
    const id = timeOrderedId("req", 1_795_000_000_123);
    expect(id).toMatch(/^req_[a-f0-9]{32}$/);
    expect(id.slice(4, 16)).toBe((1_795_000_000_123).toString(16).padStart(12, "0"));
    expect(timeOrderedId("evt", 0)).toMatch(/^evt_0{12}[a-f0-9]{20}$/);
  });

  it("sort by creation time across milliseconds, as strings (what SQLite's index compares)", () => {
    const ids = [5, 1, 4_096, 255, 1_795_000_000_000, 16].map((t) => ({ t, id: timeOrderedId("evt", t) }));
    const byId = [...ids].sort((a, b) => (a.id < b.id ? -1 : 1)).map((x) => x.t);
    expect(byId).toEqual([1, 5, 16, 255, 4_096, 1_795_000_000_000]);
  });

  it("made in one millisecond by one isolate, sort in the order made (the tail counts up, with carry)", () => {
    const ids = Array.from({ length: 5_000 }, () => timeOrderedId("evt", 77));
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids.map((id) => id.slice(4, 16)))).toEqual(new Set([(77).toString(16).padStart(12, "0")]));
    // The next millisecond starts from fresh random bytes, still after every id of the one before.
    const next = timeOrderedId("evt", 78);
    expect(next > ids.at(-1)!).toBe(true);
  });

  it("are unique within one millisecond: 20,000 ids, no repeat", () => {
    const ids = new Set(Array.from({ length: 20_000 }, () => timeOrderedId("res", 42)));
    expect(ids.size).toBe(20_000);
  });

  it("default to the current time", () => {
    const before = Date.now();
    const id = timeOrderedId("req");
    expect(parseInt(id.slice(4, 16), 16)).toBeGreaterThanOrEqual(before);
    expect(parseInt(id.slice(4, 16), 16)).toBeLessThanOrEqual(Date.now());
  });
});

describe("newId: one function, one prefix table", () => {
  it("keeps every prefix clients and stored rows already carry", () => {
    expect(ID_PREFIXES).toEqual({
      request: "req",
      reservation: "res",
      event: "evt",
      money_hold: "mls",
      key: "key",
      burst: "bst",
      allocation: "alc",
      alert: "alt",
      scaling_event: "sce",
      isolate: "iso",
    });
    // One prefix per kind: no two kinds could be mistaken for each other.
    expect(new Set(Object.values(ID_PREFIXES)).size).toBe(Object.keys(ID_PREFIXES).length);
  });

  it("makes each kind's id in the one shape: its prefix_ and 32 hex digits, time-ordered", () => {
    for (const [kind, prefix] of Object.entries(ID_PREFIXES) as Array<[IdKind, string]>) {
      const id = newId(kind, 1_795_000_000_123);
      expect(id).toMatch(new RegExp(`^${prefix}_[a-f0-9]{32}$`));
      expect(id.slice(prefix.length + 1, prefix.length + 13)).toBe((1_795_000_000_123).toString(16).padStart(12, "0"));
    }
    const ids = [newId("alert", 10), newId("alert", 10), newId("alert", 11)];
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(3);
  });

  it("defaults to the current time", () => {
    const before = Date.now();
    const id = newId("burst");
    expect(id.startsWith("bst_")).toBe(true);
    expect(parseInt(id.slice(4, 16), 16)).toBeGreaterThanOrEqual(before);
    expect(parseInt(id.slice(4, 16), 16)).toBeLessThanOrEqual(Date.now());
  });
  it("idFloor sorts after every id made before its time and before every id made at it or later", () => {
    const t = 1_795_000_000_123;
    const before = [newId("event", t - 1), newId("event", t - 1), newId("event", 5)];
    const after = [newId("event", t), newId("event", t), newId("event", t + 1)];
    const floor = idFloor("event", t);
    for (const id of before) expect(id < floor).toBe(true);
    for (const id of after) expect(id >= floor).toBe(true);
  });
});
