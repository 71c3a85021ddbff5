import type { ClientObject } from "./index";

/**
 * Client objects' ids by client id: idFromName hashes the name on every call, and every enqueue,
 * settlement and spend asks one client object. The one way to reach a client's object.
 */
const clientIds = new Map<string, DurableObjectId>();
const CLIENT_IDS_MAX = 4096;

export function clientStub(env: Env, clientId: string): DurableObjectStub<ClientObject> {
  let id = clientIds.get(clientId);
  if (!id) {
    id = env.CLIENT.idFromName(clientId);
    if (clientIds.size >= CLIENT_IDS_MAX) clientIds.clear();
    clientIds.set(clientId, id);
  }
  return env.CLIENT.get(id);
}
