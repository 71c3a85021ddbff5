import type { Tier } from "../domain/types";
import type { Logger } from "../log";

/**
 * Who is calling: a client by API key, a platform worker by internal token, an operator by admin token,
 * or a Prometheus scraper by the metrics token (which reads /metrics and nothing else).
 */
export type Principal =
  | { kind: "client"; clientId: string; tier: Tier; scopes: string[]; keyId: string }
  | { kind: "internal" }
  | { kind: "admin" }
  | { kind: "metrics" };

/** The typed Hono environment shared by every route. */
export interface AppEnv {
  Bindings: Env;
  Variables: {
    traceId: string;
    logger: Logger;
    principal: Principal;
  };
}
