import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

/**
 * A client object knows its client id from the name it is reached by (`ctx.id.name`). workerd gives no
 * name to an object that an alarm wakes cold (a burst's end, a retried delivery to D1), and that instance
 * then serves the calls that follow: the object keeps the name in its storage and reads it back.
 */
describe("client object: its client id when woken without a name", () => {
  it("an instance started by a nameless wake still answers for its client (burst records, budget alerts, which shard to wake)", async () => {
    const clientId = `named-${crypto.randomUUID().slice(0, 8)}`;
    const named = () => env.CLIENT.get(env.CLIENT.idFromName(clientId));
    expect(await named().endBurst()).toMatchObject({ ok: false, error: { code: "burst_not_found", details: { client_id: clientId } } });
    await abortAllDurableObjects();
    // Reached by its id's string, as an alarm reaches an object not in memory: no name.
    const nameless = env.CLIENT.get(env.CLIENT.idFromString(named().id.toString()));
    expect(await runInDurableObject(nameless, (_i, state) => state.id.name ?? null)).toBeNull();
    expect(await nameless.endBurst()).toMatchObject({ ok: false, error: { details: { client_id: clientId } } });
    // The same instance answers the named calls that follow (a new stub: the old ones died with the objects).
    expect(await named().endBurst()).toMatchObject({ ok: false, error: { details: { client_id: clientId } } });
    // A burst asked through it is recorded for the client, not for the object's hex id.
    const asked = await nameless.requestBurst({ tier: "standard", allowed: true, max_percent: 200, max_duration_ms: 60_000, cooldown_ms: 0, max_per_day: 10, requires_approval: false }, { percent: 150, duration_ms: 30_000 });
    expect(asked).toMatchObject({ ok: true, value: { client_id: clientId, state: "active" } });
  });
});
