import { DurableObject } from "cloudflare:workers";

/** Hierarchical allocations (see issue 6): placeholder until built. */
export class AllocationObject extends DurableObject<Env> {}
