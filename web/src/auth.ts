// Who the person is: a bearer token from the embedding messenger (`#token=` or postMessage),
// from the development sign-in, or a guest token from a share link. Kept per tab
// (sessionStorage), so two windows can be two people.

export interface Identity {
  token: string;
  principalId: string;
  kind: "user" | "guest";
  displayName: string;
  language: string;
  /** Guests: the one conversation the token admits to. */
  conversationId: string | null;
  expiresAt: number | null;
}

const KEY = "meeshy.token";
const GUEST_ISSUER = "meeshy-calls-gateway";

function decodeClaims(token: string): Record<string, unknown> | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), "=")))
        .map((c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0"))
        .join(""),
    );
    const claims: unknown = JSON.parse(json);
    return claims && typeof claims === "object" ? (claims as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** What the page may show about a token (the gateway verifies it; the page only reads it). */
export function identityOf(token: string): Identity | null {
  const c = decodeClaims(token);
  if (!c || typeof c["sub"] !== "string") return null;
  const guest = c["iss"] === GUEST_ISSUER;
  const exp = typeof c["exp"] === "number" ? c["exp"] : null;
  return {
    token,
    principalId: c["sub"],
    kind: guest ? "guest" : "user",
    displayName: typeof c["name"] === "string" && c["name"] ? c["name"] : c["sub"],
    language: typeof c["lang"] === "string" ? c["lang"] : "en",
    conversationId: guest && typeof c["conv"] === "string" ? c["conv"] : null,
    expiresAt: exp,
  };
}

export function expired(identity: Identity, nowS: number = Date.now() / 1000): boolean {
  return identity.expiresAt !== null && identity.expiresAt <= nowS;
}

export function saveToken(token: string): void {
  sessionStorage.setItem(KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(KEY);
}

export function storedIdentity(): Identity | null {
  const token = sessionStorage.getItem(KEY);
  if (!token) return null;
  const identity = identityOf(token);
  if (!identity || expired(identity)) {
    forgetToken();
    return null;
  }
  return identity;
}

/** A token handed over in the URL fragment (`#token=...`), removed from the address bar. */
export function takeFragmentToken(): string | null {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (!token) return null;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  return token;
}

/**
 * Tokens posted by the embedding page: `parent.postMessage({type: "meeshy:token", token}, ...)`.
 * Only the frame's own parent is listened to.
 */
export function listenForHandoff(onToken: (token: string) => void): void {
  if (window.parent === window) return;
  window.addEventListener("message", (event: MessageEvent<unknown>) => {
    if (event.source !== window.parent) return;
    const data = event.data as { type?: unknown; token?: unknown } | null;
    if (data && data.type === "meeshy:token" && typeof data.token === "string") {
      onToken(data.token);
    }
  });
  window.parent.postMessage({ type: "meeshy:ready" }, "*");
}
