import type { Principal } from "../domain/types";
import type { Logger } from "../log";

// Principal is a domain type (services take it too); re-exported for the routes.
export type { Principal };

/** The typed Hono environment shared by every route. */
export interface AppEnv {
  Bindings: Env;
  Variables: {
    traceId: string;
    logger: Logger;
    principal: Principal;
  };
}
