/** CSV (RFC 4180) for report exports. Pure. */

export type CsvCell = string | number | null;

/** Characters that make a spreadsheet read a cell as a formula. */
const FORMULA_START = /^[=+\-@\t\r]/;

/**
 * One cell: numbers as they are; text quoted when it holds a comma, quote or line break (quotes
 * doubled); text that a spreadsheet would run as a formula (=, +, -, @ first) prefixed with an
 * apostrophe, since ids and names are chosen by clients and operators. Null is an empty cell.
 */
export function csvCell(value: CsvCell): string {
  if (value === null) return "";
  if (typeof value === "number") return String(value);
  const text = FORMULA_START.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** A header row and the data rows, CRLF after every line. */
export function toCsv(header: string[], rows: CsvCell[][]): string {
  return [header, ...rows].map((row) => row.map(csvCell).join(",") + "\r\n").join("");
}
