import { describe, expect, it } from "vitest";
import { ObjectIds } from "../../src/objects/object-ids";

/** A namespace that counts how often it hashes a name. */
function countingNamespace() {
  const asked: string[] = [];
  return {
    asked,
    idFromName(name: string) {
      asked.push(name);
      return { name, toString: () => `id:${name}` } as unknown as DurableObjectId;
    },
  };
}

describe("object ids kept by name", () => {
  it("hashes each name once and answers the same id after", () => {
    const ns = countingNamespace();
    const ids = new ObjectIds(8);
    const first = ids.of(ns, "acme");
    expect(ids.of(ns, "acme")).toBe(first);
    expect(ids.of(ns, "globex")).not.toBe(first);
    expect(ns.asked).toEqual(["acme", "globex"]);
  });

  it("starts over when full, so it never holds more than its bound", () => {
    const ns = countingNamespace();
    const ids = new ObjectIds(2);
    ids.of(ns, "a");
    ids.of(ns, "b");
    ids.of(ns, "c"); // full: cleared, then c kept
    ids.of(ns, "c");
    ids.of(ns, "a"); // hashed again
    expect(ns.asked).toEqual(["a", "b", "c", "a"]);
  });
});
