import { describe, expect, it } from "vitest";
import { compressText, decompressText } from "../../src/domain/compression";
import { mulberry32 } from "../support/helpers";

const utf8 = (s: string) => new TextEncoder().encode(s).length;

/** The gzip bytes behind a "gz:" value. */
function gzipBytes(stored: string): Uint8Array {
  return Uint8Array.from(atob(stored.slice(3)), (c) => c.charCodeAt(0));
}

async function roundTrip(text: string, threshold: number) {
  const packed = await compressText(text, threshold);
  expect(await decompressText(packed.stored)).toBe(text);
  return packed;
}

describe("compression", () => {
  it("keeps text at or below the threshold as it is; compresses above it, with the bytes saved exactly", async () => {
    const text = "abc".repeat(2000); // 6,000 bytes
    expect(await roundTrip(text, 6000)).toEqual({ stored: text, compressed: false, bytesSaved: 0 });
    const packed = await roundTrip(text, 5999);
    expect(packed.compressed).toBe(true);
    expect(packed.stored.startsWith("gz:")).toBe(true);
    expect(packed.bytesSaved).toBe(6000 - packed.stored.length);
    expect(packed.bytesSaved).toBeGreaterThan(5000);
    // A real gzip member: magic 1f 8b, method 8 (deflate).
    expect([...gzipBytes(packed.stored).slice(0, 3)]).toEqual([0x1f, 0x8b, 8]);
  });

  it("measures the threshold in UTF-8 bytes, not characters", async () => {
    const text = "é".repeat(2000); // 2,000 characters, 4,000 bytes
    expect((await roundTrip(text, 3999)).compressed).toBe(true);
    expect((await roundTrip(text, 4000)).compressed).toBe(false);
  });

  it("round-trips the empty string, and unicode of every width (BOM, combining marks, CJK, emoji, U+2028)", async () => {
    expect(await roundTrip("", 0)).toEqual({ stored: "", compressed: false, bytesSaved: 0 });
    const text = "\uFEFFnaïve café 𝄞 日本語 🎉👩‍👩‍👧 e\u0301 \u2028\u0000 end";
    for (const threshold of [0, 10, 4096]) await roundTrip(text, threshold);
    const repeated = text.repeat(500);
    const packed = await roundTrip(repeated, 100);
    expect(packed.compressed).toBe(true);
    expect(packed.bytesSaved).toBe(utf8(repeated) - packed.stored.length);
  });

  it("round-trips large text, 2 MB of JSON, compressed", async () => {
    const big = JSON.stringify(Array.from({ length: 40_000 }, (_, i) => ({ id: i, text: `row ${i} of the report`, ok: i % 3 === 0 })));
    expect(utf8(big)).toBeGreaterThan(1_500_000);
    const packed = await roundTrip(big, 4096);
    expect(packed.compressed).toBe(true);
    expect(packed.stored.length).toBeLessThan(big.length / 4);
  });

  it("stores text that would not get smaller as it is (random bytes as base64)", async () => {
    const rand = mulberry32(21);
    const noise = btoa(String.fromCharCode(...Array.from({ length: 3000 }, () => Math.floor(rand() * 256))));
    expect(await roundTrip(noise, 0)).toEqual({ stored: noise, compressed: false, bytesSaved: 0 });
  });

  it("escapes text that begins with a prefix, so that it is never mistaken for a compressed value", async () => {
    for (const text of ["gz:", "gz:H4sIAAAAAAAAA", "raw:", "raw:raw:x", "gz:" + "a".repeat(10)]) {
      const packed = await roundTrip(text, 1_000_000);
      expect(packed.compressed).toBe(false);
      expect(packed.stored).toBe("raw:" + text);
    }
    expect(await decompressText("plain text")).toBe("plain text");
  });

  it("stores text with a lone surrogate as it is (UTF-8 cannot carry it), and round-trips it", async () => {
    const text = "x\uD800y".repeat(3000);
    expect(await roundTrip(text, 0)).toEqual({ stored: text, compressed: false, bytesSaved: 0 });
  });

  it("refuses a gz: value that is not gzip", async () => {
    await expect(decompressText("gz:bm90IGd6aXA=")).rejects.toThrow();
    await expect(decompressText("gz:%%%")).rejects.toThrow();
  });

  it("round-trips 200 random strings at random thresholds", async () => {
    const rand = mulberry32(99);
    const alphabet = ["a", "b", " ", "{", "\"", "é", "日", "😀", "\n", "gz:", "raw:"];
    for (let i = 0; i < 200; i += 1) {
      const text = Array.from({ length: Math.floor(rand() * 3000) }, () => alphabet[Math.floor(rand() * alphabet.length)]).join("");
      const packed = await roundTrip(text, Math.floor(rand() * 2000));
      if (packed.compressed) expect(packed.bytesSaved).toBe(utf8(text) - packed.stored.length);
      else expect(packed.bytesSaved).toBe(0);
    }
  });
});
