// The application: who is signed in, the one Socket.IO connection, which screen shows, and
// the global call events (incoming, missed) that can arrive on any screen.

import { Api } from "./api";
import {
  forgetToken,
  identityOf,
  listenForHandoff,
  saveToken,
  storedIdentity,
  takeFragmentToken,
  type Identity,
} from "./auth";
import { CallSession, requireJoined } from "./call/callSession";
import { byId, h } from "./dom";
import { AppError, toAppError } from "./errors";
import { LocalMedia } from "./media/localMedia";
import { loadPrefs, setPrefsOwner, type Prefs } from "./prefs";
import type { ConversationSummary, JoinedAck } from "./protocol";
import { Signaling, type EarlyEvent } from "./signaling";
import { callScreen, type CallScreen } from "./ui/callInterface";
import { conversationsScreen, conversationTitle, type MissedCall } from "./ui/conversations";
import { guestJoinScreen, guestMessageScreen, refusalText } from "./ui/guestJoin";
import { historyScreen } from "./ui/history";
import { IncomingPrompt, type Incoming } from "./ui/incomingCall";
import { announce, hideBanner, showBanner } from "./ui/notices";
import { preJoinScreen } from "./ui/preJoin";
import { show } from "./ui/screen";
import { signInScreen } from "./ui/signIn";

const GUEST_POLL_MS = 3_000;

export class App {
  private readonly api = new Api();
  private identity: Identity | null = null;
  private signaling: Signaling | null = null;
  private session: CallSession | null = null;
  private callView: CallScreen | null = null;
  private conversations: ConversationSummary[] = [];
  private readonly missed: MissedCall[] = [];
  private readonly rung = new Map<string, Incoming>();
  private prompt: IncomingPrompt | null = null;

  start(): void {
    listenForHandoff((token) => this.adopt(token));
    const link = location.pathname.replace(/\/+$/, "") === "/join" ? new URLSearchParams(location.search).get("link") : null;
    if (link !== null) {
      this.startGuest(link);
      return;
    }
    const handed = takeFragmentToken();
    if (handed) {
      this.adopt(handed);
      return;
    }
    const stored = storedIdentity();
    if (stored && stored.kind === "user") this.signedIn(stored);
    else this.showSignIn();
  }

  // --- identity ----------------------------------------------------------------------------
  private adopt(token: string): void {
    const identity = identityOf(token);
    if (!identity) {
      this.showSignIn("The sign-in token handed to this page is not readable.");
      return;
    }
    saveToken(token);
    this.signedIn(identity);
  }

  private showSignIn(message?: string): void {
    this.renderWho();
    show(signInScreen(this.api, (token) => this.adopt(token), message));
  }

  private signOut(message?: string): void {
    this.leaveQuietly();
    this.signaling?.close();
    this.signaling = null;
    this.identity = null;
    setPrefsOwner(null);
    this.api.setToken(null);
    forgetToken();
    this.showSignIn(message);
  }

  private renderWho(): void {
    const who = byId("who");
    who.replaceChildren();
    const id = this.identity;
    if (!id) return;
    who.append(h("span", { class: "who-name" }, id.kind === "guest" ? `${id.displayName} (guest)` : `Signed in as ${id.displayName}`));
    if (id.kind === "user") {
      who.append(h("button", { type: "button", class: "link", onclick: () => this.signOut() }, "Sign out"));
    }
  }

  private connect(identity: Identity): Signaling {
    this.signaling?.close();
    const signaling = new Signaling(identity.token);
    signaling.onState((state, err) => {
      if (state === "closed" && err && (err.code === "unauthorized" || err.code === "forbidden")) {
        if (identity.kind === "user") this.signOut(`${err.readable}. Sign in again.`);
        else show(guestMessageScreen("Cannot join", refusalText(err)));
      } else if (err && !this.session) {
        showBanner(`Not connected to the call service: ${err.readable}. Retrying…`, "error");
      } else if (state === "connected" && !this.session) {
        hideBanner();
      }
    });
    this.signaling = signaling;
    return signaling;
  }

  private signedIn(identity: Identity): void {
    this.identity = identity;
    setPrefsOwner(identity.principalId);
    this.api.setToken(identity.token);
    this.renderWho();
    const signaling = this.connect(identity);
    signaling.on("call:incoming", (call) => this.onIncoming(call));
    signaling.on("call:ring-stopped", ({ callId }) => this.stopRinging(callId));
    signaling.on("call:missed", ({ callId }) => this.onMissed(callId));
    signaling.on("call:ended", ({ callId, reason }) => {
      if (this.rung.has(callId) && this.session?.callId !== callId) {
        this.stopRinging(callId);
        if (reason === "missed") this.onMissed(callId);
        else showBanner("The caller hung up.", "info");
      }
    });
    this.showConversations();
  }

  // --- screens -----------------------------------------------------------------------------
  private showConversations(): void {
    const id = this.identity;
    if (!id) return;
    const screen = conversationsScreen(this.api, id.principalId, this.missed, {
      call: (c) => this.preJoin(c, null),
      join: (c, callId) => this.preJoin(c, callId),
      history: (c) => show(historyScreen(this.api, c, conversationTitle(c, id.principalId), () => this.showConversations(), id.language)),
      dismissMissed: (callId) => {
        const i = this.missed.findIndex((m) => m.callId === callId);
        if (i >= 0) this.missed.splice(i, 1);
      },
    });
    show(screen);
    this.api
      .conversations()
      .then((r) => {
        this.conversations = r.conversations;
      })
      .catch(() => undefined);
  }

  private titleOf(conversationId: string): string {
    const c = this.conversations.find((x) => x.conversationId === conversationId);
    return c && this.identity ? conversationTitle(c, this.identity.principalId) : "the conversation";
  }

  private preJoin(c: ConversationSummary, callId: string | null): void {
    const id = this.identity;
    const signaling = this.signaling;
    if (!id || !signaling) return;
    const title = conversationTitle(c, id.principalId);
    show(
      preJoinScreen({
        title: callId ? `Join the call in ${title}` : `Call ${title}`,
        action: callId ? "Join call" : "Start call",
        defaultLanguage: id.language,
        cancel: () => this.showConversations(),
        join: async (local, prefs) => {
          const capture = signaling.capture();
          try {
            const ack = callId
              ? await signaling.request<"call:join", JoinedAck>("call:join", { callId })
              : await signaling.request<"call:initiate", JoinedAck>("call:initiate", {
                  conversationId: c.conversationId,
                  media: local.hasVideo ? "video" : "audio",
                });
            this.enterCall(requireJoined(ack), local, title, c.myRole, capture.take(), prefs);
          } catch (err) {
            capture.take();
            throw err;
          }
        },
      }),
    );
  }

  private enterCall(
    ack: JoinedAck,
    local: LocalMedia,
    title: string,
    role: string | null,
    early: readonly EarlyEvent[] = [],
    prefs: Prefs = loadPrefs(),
  ): void {
    const id = this.identity;
    const signaling = this.signaling;
    if (!id || !signaling) {
      local.stop(); // signed out meanwhile: nobody will use this capture
      return;
    }
    hideBanner();
    const session = new CallSession(signaling, local, id, ack, {
      changed: () => this.callView?.refresh(),
      ended: (message, tone) => {
        this.session = null;
        this.callView = null;
        if (id.kind === "guest") {
          show(guestMessageScreen("The call has ended", message));
        } else {
          this.showConversations();
        }
        showBanner(message, tone);
      },
      notice: (message, tone) => showBanner(message, tone),
      announce: (message) => announce(message),
    }, role, early);
    this.session = session;
    // Joined with the microphone or camera off: the server starts with both on.
    if (!local.audioEnabled && local.hasAudio) void session.setAudio(false);
    if (!local.videoEnabled && local.hasVideo) void session.setVideo(false);
    // The languages chosen before joining, where they differ from the account's.
    const me = session.self;
    if (me) {
      const change: { language?: string; captionLanguage?: string } = {};
      if (prefs.spokenLanguage && prefs.spokenLanguage !== me.language) change.language = prefs.spokenLanguage;
      if (prefs.captionLanguage && prefs.captionLanguage !== (me.captionLanguage || me.language)) change.captionLanguage = prefs.captionLanguage;
      if (change.language || change.captionLanguage) void session.setLanguages(change);
    }
    this.callView = callScreen(session, this.api, title);
    show(this.callView);
  }

  private leaveQuietly(): void {
    if (this.session) {
      void this.session.leave();
      this.session = null;
    }
  }

  // --- ringing -----------------------------------------------------------------------------
  private onIncoming(call: Incoming): void {
    this.rung.set(call.callId, call);
    this.prompt?.close();
    const title = this.titleOf(call.conversationId);
    this.prompt = new IncomingPrompt(call, title, this.session !== null, {
      accept: (c) => void this.accept(c, title),
      decline: (c) => {
        this.prompt = null;
        this.signaling
          ?.request("call:decline", { callId: c.callId })
          .catch((err: unknown) => showBanner(`Could not decline: ${toAppError(err).readable}`, "error"));
      },
      timedOut: () => {
        this.prompt = null;
      },
    });
  }

  private async accept(call: Incoming, title: string): Promise<void> {
    this.prompt = null;
    const signaling = this.signaling;
    if (!signaling) return;
    if (this.session) {
      await this.session.leave();
      this.session = null;
    }
    const prefs = loadPrefs();
    const { media, warning } = await LocalMedia.acquire({ cameraId: prefs.cameraId, microphoneId: prefs.microphoneId });
    if (warning) showBanner(`${warning.readable}. You joined anyway.`, "error");
    media.setAudioEnabled(!prefs.joinMuted);
    media.setVideoEnabled(!prefs.joinCameraOff);
    const capture = signaling.capture();
    try {
      const ack = await signaling.request<"call:accept", JoinedAck>("call:accept", { callId: call.callId });
      const c = this.conversations.find((x) => x.conversationId === call.conversationId);
      this.enterCall(requireJoined(ack), media, title, c?.myRole ?? null, capture.take(), prefs);
    } catch (err) {
      capture.take();
      media.stop();
      const e = toAppError(err);
      showBanner(e.code === "call_ended" ? "The call ended before you answered." : `Could not accept: ${e.readable}`, "error");
      this.showConversations();
    }
  }

  private stopRinging(callId: string): void {
    if (this.prompt?.call.callId === callId) {
      this.prompt.close();
      this.prompt = null;
    }
  }

  private onMissed(callId: string): void {
    this.stopRinging(callId);
    const call = this.rung.get(callId);
    if (this.missed.some((m) => m.callId === callId)) return;
    this.missed.unshift({
      callId,
      from: call ? call.caller.displayName || call.caller.userId : "someone",
      conversationTitle: call ? this.titleOf(call.conversationId) : "a conversation",
      at: new Date(),
    });
    showBanner(`Missed call from ${this.missed[0]?.from ?? "someone"}.`, "info");
    if (!this.session && document.querySelector("main")?.dataset["screen"] === "conversations") this.showConversations();
  }

  // --- guests ------------------------------------------------------------------------------
  private startGuest(link: string): void {
    const stored = storedIdentity();
    // A share link names its conversation: a guest pass for that one is reused, not redeemed again.
    const linkConversation = identityOf(link)?.conversationId ?? null;
    if (stored && stored.kind === "guest" && stored.conversationId === linkConversation) {
      this.guestAdmitted(stored);
      return;
    }
    show(
      guestJoinScreen(this.api, link, (t) => {
        saveToken(t.token);
        const identity = identityOf(t.token);
        if (!identity) {
          show(guestMessageScreen("Cannot join", "The server's guest pass is not readable."));
          return;
        }
        this.guestAdmitted(identity);
      }),
    );
  }

  private guestAdmitted(identity: Identity): void {
    this.identity = identity;
    setPrefsOwner(identity.principalId);
    this.api.setToken(identity.token);
    this.renderWho();
    this.connect(identity);
    void this.guestFindCall(identity);
  }

  private async guestFindCall(identity: Identity): Promise<void> {
    const conversationId = identity.conversationId;
    if (!conversationId) return;
    let waiting = false;
    for (;;) {
      if (this.identity !== identity) return;
      try {
        const call = await this.api.activeCall(conversationId);
        if (call) {
          await this.guestEnter(call.callId);
          return;
        }
      } catch (err) {
        const e = toAppError(err);
        if (e.code === "unauthorized" || e.code === "forbidden") {
          forgetToken();
          show(guestMessageScreen("Cannot join", refusalText(e)));
          return;
        }
        showBanner(e.readable, "error");
      }
      if (!waiting) {
        waiting = true;
        show(guestMessageScreen("Waiting for the call", "No call is in progress in this conversation yet. You will join as soon as one starts."));
      }
      await new Promise((r) => setTimeout(r, GUEST_POLL_MS));
    }
  }

  private async guestEnter(callId: string): Promise<void> {
    const signaling = this.signaling;
    if (!signaling) return;
    show(guestMessageScreen("Joining the call", "Starting your camera and microphone…"));
    const prefs = loadPrefs();
    const { media, warning } = await LocalMedia.acquire({ cameraId: prefs.cameraId, microphoneId: prefs.microphoneId });
    if (warning) showBanner(`${warning.readable}. You joined anyway.`, "error");
    try {
      await waitConnected(signaling);
    } catch (err) {
      // Not connected: give the camera and microphone back (the caller retries, and would
      // otherwise hold one more capture per try).
      media.stop();
      throw err;
    }
    const capture = signaling.capture();
    try {
      const ack = await signaling.request<"call:join", JoinedAck>("call:join", { callId });
      this.enterCall(requireJoined(ack), media, "Group call", null, capture.take(), prefs);
    } catch (err) {
      capture.take();
      media.stop();
      const e = toAppError(err);
      show(guestMessageScreen("Cannot join", e instanceof AppError && e.code === "forbidden" ? refusalText(e) : e.readable));
    }
  }
}

function waitConnected(signaling: Signaling, timeoutMs = 15_000): Promise<void> {
  if (signaling.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = window.setTimeout(() => {
      off();
      reject(new AppError("network", "could not reach the call service"));
    }, timeoutMs);
    const off = signaling.onState((s) => {
      if (s === "connected") {
        window.clearTimeout(timer);
        off();
        resolve();
      }
    });
  });
}
