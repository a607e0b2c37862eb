// The media of one call, whichever way it travels: direct links (P2PMesh), SFU sessions on a
// media node (SfuSession), and migrations between them, make-before-break, both ways, as
// docs/socket-protocol.md says. The same LocalMedia tracks go on every path (no second
// camera prompt). Each tile is fed from one path at a time (the call's current path when it
// carries that person, else whichever does), so video never stops while a path changes.

import { toAppError } from "../errors";
import type {
  CallMode,
  CallView,
  ConversationType,
  ModeChanged,
  ModeSwitch,
  ParticipantView,
  ServerEvents,
  SfuPrewarm,
  SignalMessage,
  SignalType,
} from "../protocol";
import type { Signaling } from "../signaling";
import { ArrivalLog, carriesEveryone, FrameClock, P2P, sfuPath, type Expected, type PathKey } from "./arrivals";
import { EpochLedger } from "./epochs";
import { toRtcIceServers } from "./ice";
import { linkFailure, RECEIVE_GAP_MS } from "./linkHealth";
import type { LocalMedia } from "./localMedia";
import { P2PMesh } from "./p2pMesh";
import { RemoteFeeds } from "./remoteFeeds";
import { SfuSession } from "./sfuSession";
import { forMids, inboundCounters, StatsBook, statsEntries, type LinkStats, type StatsEntry } from "./stats";
import { afterModeChange, offerToNewcomer } from "./switchRules";

export interface CallMediaHost {
  readonly callId: string;
  readonly selfId: string;
  readonly conversationType: ConversationType;
  participants(): readonly ParticipantView[];
  /** The socket is connected and bound to the call (signals and reports can go out). */
  online(): boolean;
  changed(): void;
  notice(message: string, tone: "info" | "error"): void;
}

/** What one tile shows of one remote participant. */
export interface RemoteTile {
  stream: MediaStream;
  stats: LinkStats | null;
  /** The path its video comes over now ("p2p", "sfu"), or "" while none does. */
  path: string;
  /** The state of that path's connection. */
  connection: string;
  /** Video frames decoded for this participant since the call began, over every path. */
  framesDecoded: number;
}

interface Switching {
  epoch: number;
  mode: CallMode;
  kind: "migration" | "attach";
  sessionId: string | null;
  startedAt: number;
  deadlineAt: number;
  reported: "no" | "ok" | "failed";
}

/** Media seen on a path this recently counts as that path carrying the participant. */
const LIVE_MS = 2_500;
const SAMPLE_MS = 1_000;
const SAMPLE_SWITCHING_MS = 250;
const DEFAULT_DEADLINE_S = 15;

export class CallMedia {
  /** The path the call is on (what the badge says). */
  primary: CallMode;
  /** A migration under way, and where to. */
  migratingTo: CallMode | null;
  epoch: number;
  readonly frames = new FrameClock();
  readonly feeds = new RemoteFeeds();
  private primarySession: string | null = null;
  private readonly mesh: P2PMesh;
  private readonly sessions = new Map<string, SfuSession>();
  private switching: Switching | null = null;
  /** Which epochs were acted on: an older migration event is dropped, never acted on. */
  private readonly ledger: EpochLedger;
  private readonly arrivals = new ArrivalLog();
  private readonly book = new StatsBook();
  private readonly stats = new Map<string, LinkStats>();
  private readonly decoded = new Map<string, number>();
  private readonly counters = new Map<string, number>();
  private readonly routes = new Map<string, { path: PathKey | null; connection: string }>();
  private readonly reportedLinks = new WeakSet<object>();
  private readonly everMedia = new WeakSet<object>();
  private readonly lastVideo = new WeakMap<object, number>();
  /** When each direct link's transport last received anything (RTP or RTCP). */
  private readonly lastReceived = new WeakMap<object, number>();
  /** Since when it has received without a break longer than RECEIVE_GAP_MS. */
  private readonly receivingSince = new WeakMap<object, number>();
  private iceServers: RTCIceServer[];
  private pinned: string[] = [];
  private timer: number | null = null;
  private sampling = false;
  private closed = false;

  constructor(
    private readonly host: CallMediaHost,
    private readonly signaling: Signaling,
    private readonly local: LocalMedia,
    iceServers: RTCIceServer[],
    view: CallView,
  ) {
    this.iceServers = iceServers;
    this.primary = view.mode;
    this.epoch = view.epoch ?? 0;
    this.migratingTo = view.migration?.toMode ?? null;
    this.ledger = EpochLedger.fromView(view);
    this.mesh = new P2PMesh(
      local,
      iceServers,
      (to, type, body) => this.sendSignal(to, type, body),
      () => host.online(),
      {
        onRemoteStream: () => this.route(),
        onLinkState: () => this.route(),
        onError: (pid, err) => {
          const name = this.nameOf(pid);
          console.warn("media link error", pid, err);
          host.notice(`Media with ${name}: ${toAppError(err).readable}`, "error");
        },
      },
    );
    this.schedule(0);
  }

  // --- what the UI reads ---------------------------------------------------------------
  /** The badge: the call's path, or the move under way. */
  get badge(): { mode: CallMode; to: CallMode | null } {
    return { mode: this.primary, to: this.migratingTo && this.migratingTo !== this.primary ? this.migratingTo : null };
  }

  tile(participantId: string): RemoteTile {
    const route = this.routes.get(participantId);
    return {
      stream: this.feeds.streamOf(participantId),
      stats: this.stats.get(participantId) ?? null,
      path: route?.path ? (route.path === P2P ? "p2p" : "sfu") : "",
      connection: route?.connection ?? "new",
      framesDecoded: this.decoded.get(participantId) ?? 0,
    };
  }

  get pins(): readonly string[] {
    return this.pinned;
  }

  // --- call events -----------------------------------------------------------------------
  participantJoined(participantId: string, activeCount: number): void {
    const offer = offerToNewcomer({
      conversationType: this.host.conversationType,
      activeCount,
      primary: this.primary,
      migratingTo: this.migratingTo,
    });
    if (offer) this.mesh.connect(participantId);
  }

  participantLeft(participantId: string): void {
    this.mesh.disconnect(participantId);
    this.feeds.forget(participantId);
    this.book.forget(participantId);
    this.stats.delete(participantId);
    this.routes.delete(participantId);
    this.frames.forget(participantId);
    if (this.pinned.includes(participantId)) this.setPinned(this.pinned.filter((p) => p !== participantId));
    this.route();
  }

  /** Back after a socket drop: those who arrived meanwhile expect our offer; repair ICE. */
  resumed(added: readonly string[]): void {
    const count = this.host.participants().length;
    for (const pid of added) this.participantJoined(pid, count);
    this.mesh.restartUnhealthy();
  }

  handleSignal(msg: SignalMessage): void {
    this.mesh.handleSignal(msg);
  }

  private async sendSignal(to: string, type: SignalType, body: { sdp?: string; candidate?: RTCIceCandidateInit }): Promise<void> {
    await this.signaling.request("call:signal", { callId: this.host.callId, to, type, ...body });
  }

  onMigrationStarted(ev: ServerEvents["call:migration-started"]): void {
    if (!this.ledger.started(ev.epoch)) {
      console.info(`media: migration-started of epoch ${ev.epoch} dropped (acted on ${this.ledger.acted})`);
      return;
    }
    this.epoch = Math.max(this.epoch, ev.epoch);
    this.migratingTo = ev.toMode;
    this.host.changed();
  }

  async onModeSwitch(ms: ModeSwitch): Promise<void> {
    const sessionId = ms.mode === "sfu" ? (ms.sfu?.sessionId ?? null) : null;
    const same = this.switching;
    const stillThere = sessionId === null || this.sessions.has(sessionId);
    if (
      same &&
      stillThere &&
      same.epoch === ms.epoch &&
      same.mode === ms.mode &&
      same.kind === ms.kind &&
      same.sessionId === sessionId
    ) {
      // Told again (after a resume): our report may have been lost.
      if (same.reported !== "no" && same.kind === "migration") void this.report(same, same.reported === "ok", "");
      return;
    }
    if (!this.ledger.switch(ms.epoch, ms.kind)) {
      console.info(`media: ${ms.kind} switch of epoch ${ms.epoch} dropped (acted on ${this.ledger.acted}, settled ${this.ledger.settled})`);
      return;
    }
    const servers = toRtcIceServers(ms.iceServers);
    if (servers.length) {
      this.iceServers = servers;
      this.mesh.setIceServers(servers);
    }
    this.epoch = Math.max(this.epoch, ms.epoch);
    const deadlineMs = (ms.deadlineS ?? DEFAULT_DEADLINE_S) * 1000;
    const switching: Switching = {
      epoch: ms.epoch,
      mode: ms.mode,
      kind: ms.kind,
      sessionId,
      startedAt: performance.now(),
      deadlineAt: performance.now() + deadlineMs,
      reported: "no",
    };
    this.switching = switching;
    this.ledger.noteSession(ms.epoch, sessionId);
    // Every await below may be overtaken by a newer switch, a mode change or close(): act
    // after it only while this switch is still the current one.
    const current = () => !this.closed && this.switching === switching;
    console.info(`media: switch to ${ms.mode} (${ms.kind}, epoch ${ms.epoch}${sessionId ? `, session ${sessionId}` : ""}${ms.prewarmed ? ", pre-warmed" : ""})`);
    if (ms.kind === "migration") this.migratingTo = ms.mode;
    try {
      if (ms.mode === "sfu") {
        if (!ms.sfu) throw new Error("the switch names no media session");
        await this.liveSession(ms.sfu);
        if (!current()) return;
        if (ms.kind === "attach") this.attach(ms.sfu.sessionId);
      } else {
        const offerTo = ms.p2p?.offerTo ?? null;
        if (offerTo) {
          this.mesh.disconnect(offerTo); // a leftover link would be the old path's
          this.mesh.connect(offerTo);
        }
        if (ms.kind === "attach") this.primary = "p2p";
      }
    } catch (err) {
      console.warn("mode switch failed", err);
      if (!current()) return;
      if (ms.kind === "migration") await this.report(switching, false, shortReason(err));
      else this.host.notice(`Could not connect to the media server: ${toAppError(err).readable}`, "error");
    }
    this.schedule(0);
    this.host.changed();
  }

  /** The session of a switch, live (sending): a pre-warmed one only puts the tracks on. */
  private async liveSession(ref: NonNullable<ModeSwitch["sfu"]>): Promise<SfuSession> {
    let session = this.sessions.get(ref.sessionId);
    if (session) {
      session.setIceServers(this.iceServers);
      if (session.prewarmed) await session.startSending();
      await session.open();
      return session;
    }
    session = this.newSession(ref, false);
    await session.open();
    return session;
  }

  private newSession(ref: NonNullable<ModeSwitch["sfu"]>, prewarmed: boolean): SfuSession {
    const session = new SfuSession(ref, this.host.callId, this.signaling, this.local, this.iceServers, {
      changed: () => this.route(),
      failed: (err) => this.host.notice(`Media server: ${err.readable}`, "error"),
    }, { prewarmed });
    this.sessions.set(ref.sessionId, session);
    return session;
  }

  /** Joining a call already on the SFU: it is our path at once. */
  private attach(sessionId: string): void {
    this.primary = "sfu";
    this.primarySession = sessionId;
    this.migratingTo = null;
    this.mesh.closeAll();
    for (const [id, s] of this.sessions) {
      if (id !== sessionId) {
        s.close();
        this.sessions.delete(id);
        this.arrivals.forgetPath(sfuPath(id));
      }
    }
    void this.sendPreferences();
  }

  onModeChanged(ev: ModeChanged): void {
    console.info(`media: migration ${ev.fromMode} → ${ev.toMode} (epoch ${ev.epoch}) ${ev.outcome}${ev.reason ? ` (${ev.reason})` : ""}`);
    if (!this.ledger.changed(ev.epoch)) {
      console.info(`media: mode-changed of epoch ${ev.epoch} dropped (acted on ${this.ledger.acted}, settled ${this.ledger.settled})`);
      return;
    }
    this.applyModeChange(ev);
  }

  /**
   * Back after a socket drop: the resume's view says where the call is now. A migration
   * that ended while we were away (its `call:mode-changed` lost) is applied as the view shows
   * it: a mode with no migration is a completed move (or, the same mode, one that did not
   * happen); a migration under way is told again by its `call:mode-switch`.
   */
  reconcile(view: Pick<CallView, "callId" | "mode" | "epoch" | "migration">): void {
    const epoch = view.epoch ?? this.epoch;
    const migration = view.migration ?? null;
    if (!this.ledger.view(epoch, migration !== null)) {
      console.info(`media: resume view of epoch ${epoch} older than ${this.ledger.acted}: kept what we have`);
      return;
    }
    this.epoch = Math.max(this.epoch, epoch);
    if (migration) {
      this.migratingTo = migration.toMode;
      this.host.changed();
      return;
    }
    const pending = this.switching?.kind === "migration" ? this.switching.mode : null;
    const to = this.migratingTo ?? pending;
    if (view.mode === this.primary && to === null) return;
    const ev: ModeChanged =
      view.mode !== this.primary
        ? { callId: view.callId, mode: view.mode, fromMode: this.primary, toMode: view.mode, epoch, outcome: "completed", reason: "resumed" }
        : { callId: view.callId, mode: view.mode, fromMode: this.primary, toMode: to ?? view.mode, epoch, outcome: "failed", reason: "resumed" };
    console.info(`media: resume shows ${view.mode} at epoch ${epoch}, migration over: applying ${ev.fromMode} → ${ev.toMode} ${ev.outcome}`);
    this.applyModeChange(ev);
  }

  private applyModeChange(ev: ModeChanged): void {
    this.epoch = Math.max(this.epoch, ev.epoch);
    const switching = this.switching && this.switching.epoch === ev.epoch ? this.switching : null;
    // The session this epoch's switch brought up, as recorded then; never guessed.
    const newId = ev.toMode === "sfu" ? (this.ledger.sessionOf(ev.epoch) ?? null) : null;
    const newSession = newId ? this.sessions.get(newId) : undefined;
    const others = this.host.participants().filter((p) => p.participantId !== this.host.selfId).map((p) => p.participantId);
    const actions = afterModeChange(ev, {
      selfId: this.host.selfId,
      others,
      linked: this.mesh.linked,
      newSession: newSession ? { sessionId: newSession.sessionId, prewarmed: newSession.fromPrewarm } : null,
      sessions: [...this.sessions.values()].map((s) => ({ sessionId: s.sessionId, prewarmed: s.fromPrewarm })),
      primarySession: this.primarySession,
    });
    this.primary = actions.primary;
    this.migratingTo = null;
    if (switching) this.switching = null;
    if (actions.closeP2P) this.mesh.closeAll();
    for (const id of actions.closeSessions) this.closeSession(id);
    for (const id of actions.idleSessions) void this.sessions.get(id)?.stopSending();
    for (const pid of actions.offerTo) this.mesh.connect(pid);
    if (this.primary === "sfu") {
      if (ev.outcome === "completed" && newId) this.primarySession = newId;
      void this.sendPreferences();
    } else {
      this.primarySession = null;
    }
    this.route();
  }

  onPrewarm(pw: SfuPrewarm): void {
    if (this.sessions.has(pw.sfu.sessionId) || this.primary === "sfu") return;
    for (const s of [...this.sessions.values()]) if (s.fromPrewarm && s.prewarmed) this.closeSession(s.sessionId);
    console.info(`media: pre-warming session ${pw.sfu.sessionId}`);
    const servers = toRtcIceServers(pw.iceServers);
    if (servers.length) this.iceServers = servers;
    const session = this.newSession(pw.sfu, true);
    session.open().catch((err: unknown) => {
      // Only an optimisation: a switch opens a session of its own if this one is not there.
      console.warn("pre-warm failed", err);
      this.closeSession(pw.sfu.sessionId);
    });
  }

  onSlots(ev: ServerEvents["call:slots"]): void {
    this.sessions.get(ev.sessionId)?.onSlots(ev.version, ev.slots);
  }

  onVideoDemand(ev: ServerEvents["call:video-demand"]): void {
    void this.sessions.get(ev.sessionId)?.onVideoDemand(ev.send);
  }

  onSfuLeg(ev: ServerEvents["call:sfu-leg"]): void {
    this.sessions.get(ev.sessionId)?.onLeg(ev.leg, ev.state, ev.reason);
  }

  onSfuClosed(ev: ServerEvents["call:sfu-closed"]): void {
    const s = this.switching;
    if (s && s.sessionId === ev.sessionId && s.reported === "no" && s.kind === "migration") {
      void this.report(s, false, "session_closed");
    }
    this.closeSession(ev.sessionId);
  }

  private closeSession(sessionId: string): void {
    const session = this.sessions.get(sessionId);
    if (!session) return;
    session.close();
    this.sessions.delete(sessionId);
    this.arrivals.forgetPath(sfuPath(sessionId));
    if (this.primarySession === sessionId) this.primarySession = null;
    this.route();
  }

  // --- preferences ---------------------------------------------------------------------------
  setPinned(pinned: string[]): void {
    this.pinned = pinned;
    void this.sendPreferences();
    this.host.changed();
  }

  private async sendPreferences(): Promise<void> {
    if (this.primary !== "sfu" || !this.primarySession || !this.host.online()) return;
    const others = this.host.participants().length - 1;
    try {
      await this.signaling.request("call:sfu-preferences", {
        callId: this.host.callId,
        pinned: this.pinned,
        tiles: Math.max(0, Math.min(16, others)),
      });
    } catch (err) {
      const e = toAppError(err);
      if (e.code !== "conflict") this.host.notice(`Could not pin: ${e.readable}`, "error");
    }
  }

  // --- reporting -----------------------------------------------------------------------------
  private others(): ParticipantView[] {
    return this.host.participants().filter((p) => p.participantId !== this.host.selfId);
  }

  private async report(s: Switching, ok: boolean, reason: string): Promise<void> {
    s.reported = ok ? "ok" : "failed";
    const now = performance.now();
    const watched = this.others().filter((p) => p.videoEnabled).map((p) => p.participantId);
    const maxGapMs = Math.round(this.frames.maxGapMs(watched, s.startedAt - 1000, now));
    console.info(`media: epoch ${s.epoch} ${s.mode} ${ok ? "ready" : `failed (${reason})`} after ${Math.round(now - s.startedAt)} ms, longest gap ${maxGapMs} ms`);
    try {
      await this.signaling.request("call:mode-switched", {
        callId: this.host.callId,
        epoch: s.epoch,
        mode: s.mode,
        ok,
        ...(reason ? { reason } : {}),
        maxGapMs,
      });
    } catch (err) {
      // Reconnecting: the gateway tells the switch again after the resume, and we re-report.
      console.warn("mode-switched not delivered", err);
    }
  }

  private checkSwitch(now: number): void {
    const s = this.switching;
    if (!s || s.kind !== "migration" || s.reported !== "no") return;
    const path = s.mode === "sfu" && s.sessionId ? sfuPath(s.sessionId) : P2P;
    const expected: Expected[] = this.others().map((p) => ({
      participantId: p.participantId,
      audio: p.audioEnabled,
      video: p.videoEnabled,
    }));
    const session = s.sessionId ? this.sessions.get(s.sessionId) : undefined;
    const capacity = session ? { audio: session.slots.capacity("audio"), video: session.slots.capacity("video") } : {};
    if (s.mode === "sfu" && (!session || session.slots.slots.length === 0)) {
      if (now > s.deadlineAt) void this.report(s, false, "timeout");
      return;
    }
    if (carriesEveryone(this.arrivals, path, s.startedAt, expected, capacity)) {
      void this.report(s, true, "");
    } else if (now > s.deadlineAt) {
      const missing = expected
        .flatMap((e) => (["audio", "video"] as const).filter((k) => e[k] && !this.arrivals.arrivedSince(path, e.participantId, k, s.startedAt)).map((k) => `${e.participantId}/${k}`))
        .join(", ");
      console.warn(`media: ${path} did not carry ${missing || "everyone"} (slots ${JSON.stringify(session?.slots.slots ?? [])})`);
      void this.report(s, false, "timeout");
    }
  }

  // --- sampling: stats, arrivals, health ---------------------------------------------------
  private schedule(delayMs: number): void {
    if (this.closed) return;
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.sample(), delayMs);
  }

  private async sample(): Promise<void> {
    this.timer = null;
    if (this.closed || this.sampling) return;
    this.sampling = true;
    try {
      const now = performance.now();
      await this.sampleP2P(now);
      await this.sampleSfu(now);
      this.checkHealth(now);
      this.checkSwitch(now);
      this.route();
    } catch (err) {
      console.warn("stats sample failed", err);
    } finally {
      this.sampling = false;
      this.schedule(this.switching && this.switching.reported === "no" ? SAMPLE_SWITCHING_MS : SAMPLE_MS);
    }
  }

  /** Counter deltas of one receiver, credited to whoever it carries now. */
  private credit(source: string, value: number): number {
    const before = this.counters.get(source);
    this.counters.set(source, value);
    if (before === undefined || value < before) return value > 0 && before === undefined ? value : 0;
    return value - before;
  }

  private notePath(path: PathKey, pid: string, kind: "audio" | "video", delta: number, now: number): void {
    if (delta <= 0) return;
    this.arrivals.note(path, pid, kind, now);
    if (kind === "video") this.decoded.set(pid, (this.decoded.get(pid) ?? 0) + (path === this.routeOf(pid) ? delta : 0));
  }

  private routeOf(pid: string): PathKey | null {
    return this.routes.get(pid)?.path ?? null;
  }

  private async sampleP2P(now: number): Promise<void> {
    for (const p of this.others()) {
      const link = this.mesh.link(p.participantId);
      if (!link || link.isClosed) continue;
      let entries: StatsEntry[];
      try {
        entries = await statsEntries(link.pc);
      } catch {
        continue;
      }
      let video = 0;
      let packets = 0;
      for (const c of inboundCounters(entries)) {
        const key = `p2p:${p.participantId}:${c.kind}:${c.mid ?? ""}`;
        if (c.kind === "video") {
          const d = this.credit(key, c.framesDecoded);
          video += d;
          this.notePath(P2P, p.participantId, "video", d, now);
        } else {
          const d = this.credit(key, c.packetsReceived);
          packets += d;
          this.notePath(P2P, p.participantId, "audio", d, now);
        }
      }
      if (video > 0 || packets > 0) this.everMedia.add(link);
      if (video > 0) this.lastVideo.set(link, now);
      let bytes = 0;
      for (const s of entries) {
        if (s.type === "transport" && typeof s["bytesReceived"] === "number") bytes += s["bytesReceived"];
      }
      if (this.credit(`p2p:${p.participantId}:transport`, bytes) > 0 || packets > 0) {
        const last = this.lastReceived.get(link);
        if (last === undefined || now - last > RECEIVE_GAP_MS) this.receivingSince.set(link, now);
        this.lastReceived.set(link, now);
      }
      if (this.routeOf(p.participantId) === P2P || !this.stats.has(p.participantId)) {
        this.stats.set(p.participantId, this.book.summarize(p.participantId, "p2p", entries, now));
      }
    }
  }

  private async sampleSfu(now: number): Promise<void> {
    for (const session of this.sessions.values()) {
      const down = session.downlink;
      if (!down) continue;
      let entries: StatsEntry[];
      try {
        entries = await statsEntries(down.pc);
      } catch {
        continue;
      }
      const path = sfuPath(session.sessionId);
      for (const c of inboundCounters(entries)) {
        if (!c.mid) continue;
        const slot = session.slots.byMid(c.mid);
        const key = `${path}:${c.mid}`;
        const d = this.credit(key, c.kind === "video" ? c.framesDecoded : c.packetsReceived);
        if (slot?.showingId) this.notePath(path, slot.showingId, c.kind, d, now);
      }
      for (const p of this.others()) {
        if (this.routeOf(p.participantId) !== path) continue;
        const mids = new Set<string>();
        for (const kind of ["audio", "video"] as const) {
          const got = session.trackFor(p.participantId, kind);
          if (got) mids.add(got.mid);
        }
        const key = `${path}:${[...mids].sort().join(",")}`;
        this.stats.set(p.participantId, this.book.summarize(p.participantId, key, forMids(entries, mids), now));
      }
    }
  }

  /** Report direct links that fail (docs: "A client watches its direct links"). */
  private checkHealth(now: number): void {
    if (this.primary !== "p2p" || this.migratingTo !== null || !this.host.online()) return;
    for (const p of this.others()) {
      const link = this.mesh.link(p.participantId);
      if (!link || link.isClosed || this.reportedLinks.has(link)) continue;
      const ice = link.pc.iceConnectionState;
      const lastVideo = this.lastVideo.get(link);
      const lastReceived = this.lastReceived.get(link);
      const receivingSince = this.receivingSince.get(link);
      const reason = linkFailure({
        ice,
        everMedia: this.everMedia.has(link),
        ageMs: now - link.createdAt,
        videoExpected: p.videoEnabled,
        sinceVideoMs: lastVideo === undefined ? null : now - lastVideo,
        sinceReceivedMs: lastReceived === undefined ? null : now - lastReceived,
        receivingForMs: receivingSince === undefined ? null : now - receivingSince,
      });
      if (!reason) continue;
      const ago = (t: number | undefined) => (t === undefined ? "never" : `${Math.round(now - t)} ms ago`);
      console.info(
        `media: direct link to ${p.participantId} reported failed (${reason}, ICE ${ice}; ` +
          `last frame ${ago(lastVideo)}, last packet ${ago(lastReceived)}, receiving since ${ago(receivingSince)})`,
      );
      this.reportedLinks.add(link);
      this.signaling
        .request("call:media-health", { callId: this.host.callId, state: "failed", peerId: p.participantId, reason })
        .catch((err: unknown) => {
          this.reportedLinks.delete(link); // try again on the next sample
          console.warn("media-health not delivered", err);
        });
    }
  }

  // --- routing: which path feeds each tile -------------------------------------------------
  private candidates(pid: string): { path: PathKey; video: MediaStreamTrack | null; audio: MediaStreamTrack | null; connection: string }[] {
    const out: { path: PathKey; video: MediaStreamTrack | null; audio: MediaStreamTrack | null; connection: string }[] = [];
    const link = this.mesh.link(pid);
    const p2p = link && !link.isClosed ? { path: P2P, video: link.remoteVideo, audio: link.remoteAudio, connection: link.pc.iceConnectionState } : null;
    const sfu = [...this.sessions.values()].map((s) => ({
      path: sfuPath(s.sessionId),
      video: s.trackFor(pid, "video")?.track ?? null,
      audio: s.trackFor(pid, "audio")?.track ?? null,
      connection: s.downlink?.pc.connectionState ?? "new",
      primary: s.sessionId === this.primarySession,
    }));
    if (this.primary === "sfu") {
      sfu.sort((a, b) => Number(b.primary) - Number(a.primary));
      out.push(...sfu);
      if (p2p) out.push(p2p);
    } else {
      if (p2p) out.push(p2p);
      out.push(...sfu);
    }
    return out;
  }

  /** Feed every tile from one path per kind; returns nothing, tells the host if it changed. */
  route(): void {
    if (this.closed) return;
    const now = performance.now();
    const video = new Map<string, MediaStreamTrack | null>();
    const audio = new Map<string, MediaStreamTrack | null>();
    for (const p of this.others()) {
      const pid = p.participantId;
      const list = this.candidates(pid);
      const pick = (kind: "audio" | "video") =>
        list.find((c) => c[kind] && this.arrivals.arrivedSince(c.path, pid, kind, now - LIVE_MS)) ?? list.find((c) => c[kind]) ?? null;
      const v = pick("video");
      const a = pick("audio");
      video.set(pid, v?.video ?? null);
      audio.set(pid, a?.audio ?? null);
      const shown = v ?? a ?? list[0] ?? null;
      this.routes.set(pid, { path: shown ? shown.path : null, connection: shown?.connection ?? "new" });
    }
    this.feeds.setVideo(video);
    this.feeds.setAudio(audio);
    this.host.changed();
  }

  private nameOf(pid: string): string {
    return this.host.participants().find((p) => p.participantId === pid)?.displayName ?? "someone";
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.mesh.close();
    for (const s of this.sessions.values()) s.close();
    this.sessions.clear();
    this.feeds.close();
  }
}

function shortReason(err: unknown): string {
  const e = toAppError(err);
  return (e.code === "client" ? "client_error" : e.code).slice(0, 60);
}
