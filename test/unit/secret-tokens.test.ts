import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { identify, knownSecret } from "../../src/http/auth";

describe("tokens proved equal to a configured secret", () => {
  it("are remembered after the first comparison and answered without an await", async () => {
    const internal = "secret-tokens-internal-1";
    const e = { ...env, INTERNAL_TOKEN: internal, ADMIN_TOKEN: "secret-tokens-admin-1" } as Env;
    expect(knownSecret(e, internal)).toBeNull();
    const first = await identify(e, internal);
    expect(first).toEqual({ principal: { kind: "internal" }, suspended: false });
    expect(knownSecret(e, internal)).toBe(first);
    expect(await identify(e, internal)).toBe(first);
  });

  it("are compared again when the secrets change: an old internal token that is now the admin token is admin", async () => {
    const token = "secret-tokens-rotated-2";
    const before = { ...env, INTERNAL_TOKEN: token, ADMIN_TOKEN: "secret-tokens-admin-2" } as Env;
    expect((await identify(before, token))?.principal).toEqual({ kind: "internal" });
    const after = { ...env, INTERNAL_TOKEN: "secret-tokens-internal-2b", ADMIN_TOKEN: token } as Env;
    expect(knownSecret(after, token)).toBeNull();
    expect((await identify(after, token))?.principal).toEqual({ kind: "admin" });
    // And a token that is no secret any more is not valid (no API key has it either).
    const revoked = { ...env, INTERNAL_TOKEN: "secret-tokens-internal-2c", ADMIN_TOKEN: "secret-tokens-admin-2c" } as Env;
    expect(knownSecret(revoked, token)).toBeNull();
    expect(await identify(revoked, token)).toBeNull();
  });

  it("never remembers a token that is not a secret", async () => {
    const e = { ...env, INTERNAL_TOKEN: "secret-tokens-internal-3", ADMIN_TOKEN: "secret-tokens-admin-3" } as Env;
    expect(await identify(e, "secret-tokens-not-a-secret")).toBeNull();
    expect(knownSecret(e, "secret-tokens-not-a-secret")).toBeNull();
  });
});
