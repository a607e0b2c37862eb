// Every failure the person can meet becomes an AppError with a readable sentence.
// Server refusals keep their code (for logic) and their reason (for people).

export type ErrorCode =
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "bad_request"
  | "conflict"
  | "call_ended"
  | "not_in_call"
  | "rate_limited"
  | "unknown_event"
  | "unavailable"
  | "internal"
  | "network"
  | "timeout"
  | "media"
  | "client";

const PREFIX: Record<ErrorCode, string> = {
  unauthorized: "You are not signed in, or your session expired",
  forbidden: "Not allowed",
  not_found: "Not found",
  bad_request: "The request was refused",
  conflict: "That cannot be done right now",
  call_ended: "The call has ended",
  not_in_call: "You are not in this call",
  rate_limited: "Too many attempts; wait a moment and try again",
  unknown_event: "This server does not support that yet",
  unavailable: "The service is temporarily unavailable",
  internal: "The server had a problem",
  network: "Cannot reach the server",
  timeout: "The server did not answer in time",
  media: "Camera or microphone problem",
  client: "Something went wrong in this page",
};

const KNOWN = new Set(Object.keys(PREFIX));

export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly reason: string,
    readonly status?: number,
  ) {
    super(reason ? `${PREFIX[code]}: ${reason}` : PREFIX[code]);
    this.name = "AppError";
  }

  /** The sentence shown to the person. */
  get readable(): string {
    return this.message;
  }
}

export function asCode(code: unknown): ErrorCode {
  return typeof code === "string" && KNOWN.has(code) ? (code as ErrorCode) : "internal";
}

/** Build an AppError from a server error body `{code, message}` (REST or Socket.IO ack). */
export function fromServer(body: unknown, status?: number): AppError {
  if (body && typeof body === "object") {
    const o = body as Record<string, unknown>;
    const message = typeof o["message"] === "string" ? o["message"] : "";
    return new AppError(asCode(o["code"]), message, status);
  }
  return new AppError("internal", "", status);
}

/** Any thrown value as an AppError (a bug in the page still gets a readable message). */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof DOMException) return mediaError(err);
  const text = err instanceof Error ? err.message : String(err);
  return new AppError("client", text);
}

/** getUserMedia / getDisplayMedia failures, in words. */
export function mediaError(err: DOMException): AppError {
  switch (err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new AppError(
        "media",
        "access was blocked; allow the camera and microphone in the browser's site settings",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return new AppError("media", "no camera or microphone was found");
    case "NotReadableError":
    case "AbortError":
      return new AppError("media", "the device is in use by another application");
    default:
      return new AppError("media", err.message || err.name);
  }
}

/**
 * A Socket.IO connection refusal. The gateway sends `{code, message}` as the error data, or
 * (older gateways) the same dict printed into the message as a Python literal.
 */
export function fromConnectError(err: Error & { data?: unknown }): AppError {
  if (err.data && typeof err.data === "object" && "code" in err.data) return fromServer(err.data);
  const text = err.message || "";
  const code = /'code':\s*'([a-z_]+)'/.exec(text)?.[1];
  if (code) {
    const message = /'message':\s*(['"])(.*?)\1/.exec(text)?.[2] ?? "";
    return new AppError(asCode(code), message);
  }
  if (/xhr poll error|websocket error|timeout/i.test(text)) {
    return new AppError("network", "the connection to the server failed");
  }
  return new AppError("network", text);
}
