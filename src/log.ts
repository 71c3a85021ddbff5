/**
 * Log lines, one object per line: `wrangler tail --format json` and Workers Logs show their fields.
 * Every line carries a trace id when one is known. Never pass secrets or credentials here.
 *
 * Every level goes to console.log, with the level as a field: under `wrangler dev`, console.warn and
 * console.error lines come out wrapped in ANSI colour codes (wrangler's own warning and error
 * format), which a line-by-line JSON reader cannot parse. Where a line is printed as text (wrangler
 * dev, the test runner) it is rendered as one line of JSON by its inspect hook; tail and Workers Logs
 * receive the object itself.
 */
type Level = "debug" | "info" | "warn" | "error";
type Fields = Record<string, unknown>;

const INSPECT = Symbol.for("nodejs.util.inspect.custom");

/** How a line prints as text: one line of JSON (not the runtime's multi-line object format). */
function asJson(this: Fields): string {
  return JSON.stringify(this);
}

/** The object a line is: its fields, and non-enumerable text forms (inspect, String()) that tail never sees. */
function logLine(level: Level, msg: string, fields: Fields): Fields {
  const line: Fields = { level, msg, time: Date.now(), ...fields };
  Object.defineProperty(line, INSPECT, { value: asJson });
  Object.defineProperty(line, "toString", { value: asJson });
  return line;
}

function emit(level: Level, msg: string, fields: Fields): void {
  console.log(logLine(level, msg, fields));
}

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

/** A logger whose lines carry `base`. One per request: methods on the prototype, nothing allocated until a line is written. */
class FieldsLogger implements Logger {
  constructor(private readonly base: Fields) {}
  debug(msg: string, f: Fields = {}): void {
    emit("debug", msg, { ...this.base, ...f });
  }
  info(msg: string, f: Fields = {}): void {
    emit("info", msg, { ...this.base, ...f });
  }
  warn(msg: string, f: Fields = {}): void {
    emit("warn", msg, { ...this.base, ...f });
  }
  error(msg: string, f: Fields = {}): void {
    emit("error", msg, { ...this.base, ...f });
  }
  child(f: Fields): Logger {
    return new FieldsLogger({ ...this.base, ...f });
  }
}

export function createLogger(base: Fields = {}): Logger {
  return new FieldsLogger(base);
}

/** Logger for code with no request in scope (alarms, cron); pass `trace_id` in fields where one exists. */
export const log = createLogger();
