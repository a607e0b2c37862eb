// REST client of the gateway (same origin, bearer token). Every failure is an AppError.

import { AppError, fromServer } from "./errors";
import type {
  CallDetailView,
  CallView,
  ConversationSummary,
  GuestTokenView,
  HistoryPage,
  ShareLinkView,
  TranscriptView,
} from "./protocol";

const TIMEOUT_MS = 15_000;

export class Api {
  constructor(
    private readonly base: string = "",
    private token: string | null = null,
  ) {}

  setToken(token: string | null): void {
    this.token = token;
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.token) headers["Authorization"] = `Bearer ${this.token}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    let resp: Response;
    try {
      resp = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        signal: controller.signal,
        credentials: "omit",
      });
    } catch (err) {
      throw controller.signal.aborted
        ? new AppError("timeout", `${method} ${path}`)
        : new AppError("network", "check your connection and try again");
    } finally {
      clearTimeout(timer);
    }
    if (resp.status === 204) return undefined as T;
    const text = await resp.text();
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) {
      const error = (data as { error?: unknown } | null)?.error;
      if (error) throw fromServer(error, resp.status);
      throw new AppError(resp.status >= 500 ? "unavailable" : "bad_request", `HTTP ${resp.status}`, resp.status);
    }
    return data as T;
  }

  devToken(userId: string, displayName: string, language: string): Promise<{ token: string }> {
    return this.request("POST", "/api/dev/token", { userId, displayName, language });
  }

  conversations(): Promise<{ conversations: ConversationSummary[] }> {
    return this.request("GET", "/api/conversations");
  }

  /** The conversation's call in progress, or null when there is none. */
  async activeCall(conversationId: string): Promise<CallView | null> {
    try {
      return await this.request<CallView>(
        "GET",
        `/api/conversations/${encodeURIComponent(conversationId)}/active-call`,
      );
    } catch (err) {
      if (err instanceof AppError && err.code === "not_found" && err.status === 404) {
        // Both "no such conversation" and "no active call" are 404; only the latter is normal.
        if (/no active call/.test(err.reason)) return null;
      }
      throw err;
    }
  }

  createShareLink(conversationId: string): Promise<ShareLinkView> {
    return this.request("POST", `/api/conversations/${encodeURIComponent(conversationId)}/share-links`, {});
  }

  redeemLink(link: string, displayName: string, language: string): Promise<GuestTokenView> {
    return this.request("POST", "/api/guests", { link, displayName, language });
  }

  call(callId: string): Promise<CallView> {
    return this.request("GET", `/api/calls/${encodeURIComponent(callId)}`);
  }

  /** The signed-in person's calls, newest first (`GET /api/calls/history`). */
  history(cursor: string | null = null, limit = 50): Promise<HistoryPage> {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor) q.set("cursor", cursor);
    return this.request("GET", `/api/calls/history?${q.toString()}`);
  }

  /** One call with what the archive knows of it (participants, mode changes). */
  callDetail(callId: string): Promise<CallDetailView> {
    return this.request("GET", `/api/calls/${encodeURIComponent(callId)}`);
  }

  /** The stored transcript of a call, with the captions in `lang` (people who were in it). */
  transcript(callId: string, lang: string | null, cursor: string | null = null): Promise<TranscriptView> {
    const q = new URLSearchParams();
    if (lang) q.set("lang", lang);
    if (cursor) q.set("cursor", cursor);
    return this.request("GET", `/api/calls/${encodeURIComponent(callId)}/transcript?${q.toString()}`);
  }
}
