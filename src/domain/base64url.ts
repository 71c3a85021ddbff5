/**
 * base64url without padding (RFC 4648 §5): opaque page cursors, API key secrets, session values.
 * Pure and synchronous.
 */

export function base64url(bytes: ArrayBuffer | Uint8Array): string {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The bytes of a base64url text; throws on text that is not base64url. */
export function fromBase64url(text: string): Uint8Array {
  return Uint8Array.from(atob(text.replaceAll("-", "+").replaceAll("_", "/")), (ch) => ch.charCodeAt(0));
}

/** An opaque cursor for an ASCII position text ("<time>:<id>" and the like). */
export function encodeCursorText(text: string): string {
  return base64url(new TextEncoder().encode(text));
}

/** The position text of a cursor, or null when it is not base64url. */
export function decodeCursorText(cursor: string): string | null {
  try {
    return new TextDecoder().decode(fromBase64url(cursor));
  } catch {
    return null;
  }
}
