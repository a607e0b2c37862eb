// One SFU session on a media node: an uplink (our tracks) and a downlink (the slots), both
// negotiated at once through the gateway, the slot table, video demand, and repairing a leg
// the node says failed (re-publish the uplink, re-open the downlink).

import { AppError } from "../errors";
import type { SfuDownlinkAck, SfuPublishAck, SfuRefView, SlotInfo } from "../protocol";
import type { Signaling } from "../signaling";
import type { LocalMedia, TrackKind } from "./localMedia";
import { SfuDownlink } from "./sfuDownlink";
import { SfuUplink } from "./sfuUplink";
import { SlotMap } from "./slotMap";

export interface SfuSessionEvents {
  /** Slots, tracks or leg state changed: re-route the tiles. */
  changed(): void;
  /** A leg could not be repaired (the person is told; a new session may follow). */
  failed(err: AppError): void;
}

/** Attempts to repair one leg before giving up on it. */
const MAX_REPAIRS = 3;

export type Leg = "uplink" | "downlink";

export class SfuSession {
  readonly sessionId: string;
  readonly nodeId: string;
  readonly slots = new SlotMap();
  uplink: SfuUplink | null = null;
  downlink: SfuDownlink | null = null;
  /** Connected, sending nothing (pre-warm) until a switch puts the tracks on. */
  prewarmed: boolean;
  /** Opened by a pre-warm: after a failed migration it goes back to idle, not away. */
  readonly fromPrewarm: boolean;
  private readonly repairs: Record<Leg, number> = { uplink: 0, downlink: 0 };
  private readonly repairing = new Set<Leg>();
  private videoDemand = true;
  private closed = false;
  private opened: Promise<void> | null = null;

  constructor(
    ref: SfuRefView,
    private readonly callId: string,
    private readonly signaling: Signaling,
    private readonly local: LocalMedia,
    private iceServers: RTCIceServer[],
    private readonly events: SfuSessionEvents,
    opts: { prewarmed: boolean },
  ) {
    this.sessionId = ref.sessionId;
    this.nodeId = ref.nodeId;
    this.prewarmed = opts.prewarmed;
    this.fromPrewarm = opts.prewarmed;
  }

  get sending(): boolean {
    return this.uplink?.isSending ?? !this.prewarmed;
  }

  /** Both legs at once; resolves when both are negotiated (media starts on connect). */
  open(): Promise<void> {
    if (!this.opened) {
      const opening = Promise.all([this.publish(), this.openDownlink()]).then(() => undefined);
      this.opened = opening;
      // A failed open is not kept: the next open() (a switch told again) tries afresh.
      opening.catch(() => {
        if (this.opened === opening) this.opened = null;
      });
    }
    return this.opened;
  }

  setIceServers(servers: RTCIceServer[]): void {
    if (servers.length) this.iceServers = servers;
  }

  private async publish(): Promise<void> {
    const old = this.uplink;
    // Whether it sends is decided as it becomes this.uplink, with nothing awaited between:
    // a startSending()/stopSending() during the negotiation below then reaches this uplink,
    // never the old one (a pre-warmed session going live while it re-publishes stays live).
    const up = new SfuUplink(this.iceServers, this.local, ["audio", "video"], !this.prewarmed && (old?.isSending ?? true), (s) =>
      this.legState("uplink", s),
    );
    this.uplink = up;
    await up.setVideoDemand(this.videoDemand);
    try {
      await up.negotiate(async (sdp) => {
        const ack = await this.signaling.request<"call:sfu-publish", SfuPublishAck>("call:sfu-publish", { callId: this.callId, sdp });
        return ack.sdp;
      });
    } finally {
      old?.close();
    }
    if (this.closed) up.close();
    this.events.changed();
  }

  private async openDownlink(): Promise<void> {
    const old = this.downlink;
    const down = new SfuDownlink(this.iceServers, (s) => this.legState("downlink", s));
    try {
      const ack = await down.open(
        () => this.signaling.request<"call:sfu-downlink", SfuDownlinkAck>("call:sfu-downlink", { callId: this.callId }),
        async (sdp) => {
          await this.signaling.request("call:sfu-downlink-answer", { callId: this.callId, sdp });
        },
      );
      if (this.closed) {
        down.close();
        return;
      }
      this.downlink = down;
      this.slots.reset(ack.version, ack.slots);
    } catch (err) {
      down.close();
      throw err;
    } finally {
      if (old && old !== this.downlink) old.close();
    }
    this.events.changed();
  }

  private legState(leg: Leg, state: RTCPeerConnectionState): void {
    if (state === "connected") this.repairs[leg] = 0;
    if (state === "failed") void this.repair(leg, "the connection failed");
    this.events.changed();
  }

  /** `call:sfu-leg`: the node's view of a leg. */
  onLeg(leg: Leg, state: string, reason: string | null): void {
    if (state === "connected") this.repairs[leg] = 0;
    else if (state === "failed") void this.repair(leg, reason ?? "failed");
    this.events.changed();
  }

  private async repair(leg: Leg, why: string): Promise<void> {
    if (this.closed || this.repairing.has(leg)) return;
    if (this.repairs[leg] >= MAX_REPAIRS) {
      this.events.failed(new AppError("unavailable", `the media server connection (${leg}) keeps failing: ${why}`));
      return;
    }
    this.repairs[leg] += 1;
    this.repairing.add(leg);
    try {
      if (leg === "uplink") await this.publish();
      else await this.openDownlink();
    } catch (err) {
      if (!this.closed) {
        this.repairing.delete(leg);
        console.warn(`re-opening the ${leg} failed`, err);
        window.setTimeout(() => void this.repair(leg, why), 1_000 * this.repairs[leg]);
        return;
      }
    }
    this.repairing.delete(leg);
  }

  /** A pre-warmed session goes live (the switch only puts the tracks on). */
  async startSending(): Promise<void> {
    this.prewarmed = false;
    await this.uplink?.setSending(true);
    this.events.changed();
  }

  /** Back to idle (a migration that failed on a pre-warmed session). */
  async stopSending(): Promise<void> {
    this.prewarmed = true;
    await this.uplink?.setSending(false);
    this.events.changed();
  }

  onSlots(version: number, slots: SlotInfo[]): void {
    if (this.slots.update(version, slots)) this.events.changed();
  }

  async onVideoDemand(send: boolean): Promise<void> {
    this.videoDemand = send;
    await this.uplink?.setVideoDemand(send);
  }

  /** The receiving track of the slot of `kind` carrying `participantId`, if any. */
  trackFor(participantId: string, kind: TrackKind): { track: MediaStreamTrack; mid: string } | null {
    const slot = this.slots.slotShowing(participantId, kind);
    const track = slot ? this.downlink?.tracks.get(slot.mid) : undefined;
    return slot && track ? { track, mid: slot.mid } : null;
  }

  get connected(): boolean {
    return this.downlink?.pc.connectionState === "connected";
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.uplink?.close();
    this.downlink?.close();
  }
}
