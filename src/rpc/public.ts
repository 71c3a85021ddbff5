/**
 * What a caller of the RPC entrypoint imports for its types (package.json `types`): the entrypoint
 * class for `Service<ResourceManagerRpc>`, and the shapes of its inputs and answers.
 */
export type { ResourceManagerRpc } from "./entrypoint";
export type { RpcError, RpcFailure, RpcInput, RpcOptions, RpcOutput, RpcResult } from "./types";
export type { OperationName } from "./operations";
