import { ObjectIds } from "../object-ids";
import type { ClientObject } from "./index";

/** Client objects' ids: every enqueue, settlement and spend asks one client object. */
const clientIds = new ObjectIds(4096);

/** The one way to reach a client's object. */
export function clientStub(env: Env, clientId: string): DurableObjectStub<ClientObject> {
  return env.CLIENT.get(clientIds.of(env.CLIENT, clientId));
}
