/**
 * JSON log lines, one object per line, as `wrangler tail` shows them. Every line carries a trace id
 * when one is known. Never pass secrets or credentials here.
 */
type Level = "debug" | "info" | "warn" | "error";
type Fields = Record<string, unknown>;

function emit(level: Level, msg: string, fields: Fields): void {
  const line = JSON.stringify({ level, msg, time: Date.now(), ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

export function createLogger(base: Fields = {}): Logger {
  return {
    debug: (msg, f = {}) => emit("debug", msg, { ...base, ...f }),
    info: (msg, f = {}) => emit("info", msg, { ...base, ...f }),
    warn: (msg, f = {}) => emit("warn", msg, { ...base, ...f }),
    error: (msg, f = {}) => emit("error", msg, { ...base, ...f }),
    child: (f) => createLogger({ ...base, ...f }),
  };
}

/** Logger for code with no request in scope (alarms, cron); pass `trace_id` in fields where one exists. */
export const log = createLogger();
