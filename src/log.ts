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
