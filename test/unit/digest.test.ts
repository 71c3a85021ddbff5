import { describe, expect, it } from "vitest";
import { hex, sha256Hex } from "../../src/domain/digest";

describe("digests as hex", () => {
  it("writes every byte as two lowercase digits, in order", () => {
    expect(hex(new Uint8Array([0x00, 0x0f, 0x10, 0xa5, 0xff]).buffer)).toBe("000f10a5ff");
    expect(hex(new Uint8Array(0).buffer)).toBe("");
  });

  it("gives the standard SHA-256 of known texts", async () => {
    expect(await sha256Hex("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(await sha256Hex("")).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });
});
