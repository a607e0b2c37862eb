// What the person sees and hears of each other participant, whichever path carries it: one
// stable MediaStream per participant for the tile (its video track swapped in place when
// the path or the SFU slot changes, so the <video> element never restarts), and one hidden
// <audio> element per remote audio track, exactly one of them audible per participant.

export class RemoteFeeds {
  private readonly streams = new Map<string, MediaStream>();
  private readonly audio = new Map<string, HTMLAudioElement>();
  private readonly box: HTMLElement;
  private sinkId = "";

  constructor() {
    this.box = document.createElement("div");
    this.box.className = "remote-audio";
    this.box.hidden = true;
    document.body.appendChild(this.box);
  }

  streamOf(participantId: string): MediaStream {
    let s = this.streams.get(participantId);
    if (!s) {
      s = new MediaStream();
      this.streams.set(participantId, s);
    }
    return s;
  }

  /** The video each participant's tile shows now; returns whether anything changed. */
  setVideo(assign: ReadonlyMap<string, MediaStreamTrack | null>): boolean {
    let changed = false;
    // Removals first: a slot's track moving from one participant to another is never in two tiles.
    for (const [pid, stream] of this.streams) {
      const want = assign.get(pid) ?? null;
      for (const t of stream.getVideoTracks()) {
        if (t !== want) {
          stream.removeTrack(t);
          changed = true;
        }
      }
    }
    for (const [pid, track] of assign) {
      const stream = this.streamOf(pid);
      if (track && !stream.getVideoTracks().includes(track)) {
        stream.addTrack(track);
        changed = true;
      }
    }
    return changed;
  }

  /** The one audio track to hear per participant; every other remote audio is silent. */
  setAudio(assign: ReadonlyMap<string, MediaStreamTrack | null>): void {
    const wanted = new Set<MediaStreamTrack>();
    for (const t of assign.values()) if (t) wanted.add(t);
    for (const [id, el] of this.audio) {
      const track = (el.srcObject as MediaStream | null)?.getAudioTracks()[0];
      if (!track || !wanted.has(track)) {
        el.pause();
        el.srcObject = null;
        el.remove();
        this.audio.delete(id);
      }
    }
    for (const track of wanted) {
      if (this.audio.has(track.id)) continue;
      const el = document.createElement("audio");
      el.autoplay = true;
      el.srcObject = new MediaStream([track]);
      this.applySink(el);
      this.box.appendChild(el);
      this.audio.set(track.id, el);
      void el.play().catch(() => undefined);
    }
  }

  setSink(sinkId: string): void {
    if (sinkId === this.sinkId) return;
    this.sinkId = sinkId;
    for (const el of this.audio.values()) this.applySink(el);
  }

  private applySink(el: HTMLAudioElement): void {
    const withSink = el as HTMLAudioElement & { setSinkId?(id: string): Promise<void> };
    if (this.sinkId && withSink.setSinkId) void withSink.setSinkId(this.sinkId).catch(() => undefined);
  }

  forget(participantId: string): void {
    const s = this.streams.get(participantId);
    if (s) for (const t of s.getTracks()) s.removeTrack(t);
    this.streams.delete(participantId);
  }

  close(): void {
    this.setAudio(new Map());
    this.box.remove();
    for (const pid of [...this.streams.keys()]) this.forget(pid);
  }
}
