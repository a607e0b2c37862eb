// The Socket.IO connection to the gateway: typed events, requests with acknowledgements and a
// deadline, and the connection state (it reconnects by itself after a network drop).

import { io, type Socket } from "socket.io-client";
import { AppError, fromConnectError, fromServer } from "./errors";
import type { ClientEvents, ServerEvents } from "./protocol";

/** A server event kept while a join is in flight (events can overtake the join's ack). */
export interface EarlyEvent {
  event: string;
  payload: unknown;
}

export interface Capture {
  /** Stop keeping events; returns those kept. */
  take(): EarlyEvent[];
}

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "closed";

type Ack = { ok: boolean; error?: unknown } & Record<string, unknown>;

const REQUEST_TIMEOUT_MS = 10_000;

export class Signaling {
  private readonly socket: Socket;
  private stateValue: ConnectionState = "connecting";
  private readonly stateListeners = new Set<(s: ConnectionState, err?: AppError) => void>();
  private everConnected = false;
  private closed = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(token: string, url: string = location.origin) {
    this.socket = io(url, {
      auth: { token },
      transports: ["websocket", "polling"],
      reconnection: true,
      reconnectionDelay: 300,
      reconnectionDelayMax: 2_000,
      randomizationFactor: 0.3,
      timeout: 8_000,
    });
    this.socket.on("connect", () => {
      this.everConnected = true;
      this.setState("connected");
    });
    this.socket.on("disconnect", (reason) => {
      if (reason === "io client disconnect") {
        this.setState("closed");
      } else if (reason === "io server disconnect") {
        // The server closed this socket on purpose; try once more (a rolling restart).
        this.setState("reconnecting");
        this.socket.connect();
      } else {
        this.setState("reconnecting");
      }
    });
    this.socket.on("connect_error", (err: Error & { data?: unknown }) => {
      const error = fromConnectError(err);
      if (error.code === "unauthorized" || error.code === "forbidden") {
        // A refused token is final: reconnecting with it again cannot help.
        this.socket.disconnect();
        this.setState("closed", error);
      } else if (!this.socket.active) {
        // The server refused for a passing reason (starting, NATS away): retry ourselves.
        this.setState(this.everConnected ? "reconnecting" : "connecting", error);
        if (this.retryTimer !== null) clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          if (!this.closed) this.socket.connect();
        }, 1_000);
      } else {
        this.setState(this.everConnected ? "reconnecting" : "connecting", error);
      }
    });
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  get connected(): boolean {
    return this.socket.connected;
  }

  private setState(state: ConnectionState, err?: AppError): void {
    const changed = state !== this.stateValue;
    this.stateValue = state;
    if (changed || err) for (const listener of this.stateListeners) listener(state, err);
  }

  onState(listener: (s: ConnectionState, err?: AppError) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  on<E extends keyof ServerEvents>(event: E, handler: (payload: ServerEvents[E]) => void): () => void {
    const wrapped = (payload: ServerEvents[E]) => {
      try {
        handler(payload);
      } catch (err) {
        console.error(`handler of ${event} failed`, err);
      }
    };
    this.socket.on(event as string, wrapped as (...args: unknown[]) => void);
    return () => this.socket.off(event as string, wrapped as (...args: unknown[]) => void);
  }

  /**
   * Keep every server event from now on, until `take()`: a join's ack can arrive after the
   * first events of the call it joins (docs/socket-protocol.md), which the call replays.
   */
  capture(limit = 500): Capture {
    const kept: EarlyEvent[] = [];
    const listener = (event: string, payload: unknown) => {
      if (kept.length < limit) kept.push({ event, payload });
    };
    this.socket.onAny(listener);
    return {
      take: () => {
        this.socket.offAny(listener);
        return kept.splice(0);
      },
    };
  }

  /** Emit with an acknowledgement; resolves with the ack, throws AppError on a refusal. */
  async request<E extends keyof ClientEvents, R extends object = Record<string, unknown>>(
    event: E,
    payload: ClientEvents[E],
    timeoutMs: number = REQUEST_TIMEOUT_MS,
  ): Promise<R & { ok: true }> {
    if (!this.socket.connected) {
      throw new AppError("network", "not connected to the server (reconnecting)");
    }
    let ack: Ack;
    try {
      ack = (await this.socket.timeout(timeoutMs).emitWithAck(event, payload)) as Ack;
    } catch {
      throw new AppError("timeout", `no answer to ${event}`);
    }
    if (!ack || typeof ack !== "object") throw new AppError("internal", `bad answer to ${event}`);
    if (!ack.ok) throw fromServer(ack.error);
    return ack as R & { ok: true };
  }

  close(): void {
    // A pending retry would connect again after close (a signed-out socket coming back).
    this.closed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.socket.disconnect();
  }
}
