import type { HistogramSnapshot } from "./histogram";

/**
 * The Prometheus text exposition format, version 0.0.4: one `# HELP` and one `# TYPE` line per family,
 * then its samples. Pure; label values are escaped, so any string is safe as a value.
 */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export type Labels = Record<string, string>;

export type Family =
  | { name: string; help: string; type: "counter" | "gauge"; samples: Array<{ labels?: Labels; value: number }> }
  | { name: string; help: string; type: "histogram"; samples: Array<{ labels?: Labels; value: HistogramSnapshot }> };

export function exposition(families: Family[]): string {
  const lines: string[] = [];
  for (const f of families) {
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    if (f.type === "histogram") {
      for (const { labels = {}, value } of f.samples) {
        value.cumulative.forEach((n, i) => {
          const le = i < value.bounds.length ? number(value.bounds[i]!) : "+Inf";
          lines.push(`${f.name}_bucket${labelText({ ...labels, le })} ${number(n)}`);
        });
        lines.push(`${f.name}_sum${labelText(labels)} ${number(value.sum)}`, `${f.name}_count${labelText(labels)} ${number(value.count)}`);
      }
    } else {
      for (const { labels = {}, value } of f.samples) lines.push(`${f.name}${labelText(labels)} ${number(value)}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

function labelText(labels: Labels): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v.replaceAll("\\", "\\\\").replaceAll("\"", "\\\"").replaceAll("\n", "\\n")}"`);
  return pairs.length ? `{${pairs.join(",")}}` : "";
}

function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

function number(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}
