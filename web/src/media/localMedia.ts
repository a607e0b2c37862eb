// The person's own camera, microphone and screen: acquired once, kept for the whole call
// (through reconnects and mode switches), switched in place when a device changes.

import { AppError, mediaError } from "../errors";

export type TrackKind = "audio" | "video";
type TrackListener = (kind: TrackKind, track: MediaStreamTrack | null) => void;

export interface DeviceChoice {
  cameraId: string;
  microphoneId: string;
}

function constraint(id: string): MediaTrackConstraints | boolean {
  return id ? { deviceId: { ideal: id } } : true;
}

export class LocalMedia {
  /** Camera and microphone (the preview shows this stream). */
  readonly stream = new MediaStream();
  private screen: MediaStreamTrack | null = null;
  private readonly listeners = new Set<TrackListener>();
  private audioOn = true;
  private videoOn = true;

  private constructor() {}

  /**
   * Camera and microphone, falling back to the microphone alone, then to nothing (the person
   * can still join and listen). `warning` says what is missing, in words.
   */
  static async acquire(choice: DeviceChoice): Promise<{ media: LocalMedia; warning: AppError | null }> {
    const media = new LocalMedia();
    if (!navigator.mediaDevices?.getUserMedia) {
      return {
        media,
        warning: new AppError("media", "this page has no camera access (open it over https or on localhost)"),
      };
    }
    const attempts: MediaStreamConstraints[] = [
      { audio: constraint(choice.microphoneId), video: constraint(choice.cameraId) },
      { audio: constraint(choice.microphoneId), video: false },
      { audio: false, video: constraint(choice.cameraId) },
    ];
    let first: unknown = null;
    for (const c of attempts) {
      try {
        const got = await navigator.mediaDevices.getUserMedia(c);
        for (const t of got.getTracks()) media.stream.addTrack(t);
        const warning = first
          ? new AppError("media", c.video ? "no microphone: others will not hear you" : "no camera: others will not see you")
          : null;
        return { media, warning };
      } catch (err) {
        first ??= err;
        if (err instanceof DOMException && (err.name === "NotAllowedError" || err.name === "SecurityError")) break;
      }
    }
    const warning = first instanceof DOMException ? mediaError(first) : new AppError("media", String(first));
    return { media, warning };
  }

  get audioTrack(): MediaStreamTrack | null {
    return this.stream.getAudioTracks()[0] ?? null;
  }

  get cameraTrack(): MediaStreamTrack | null {
    return this.stream.getVideoTracks()[0] ?? null;
  }

  /** What is sent as video: the screen while sharing, else the camera. */
  get outgoingVideo(): MediaStreamTrack | null {
    return this.screen ?? this.cameraTrack;
  }

  get sharing(): boolean {
    return this.screen !== null;
  }

  get audioEnabled(): boolean {
    return this.audioOn && this.audioTrack !== null;
  }

  get videoEnabled(): boolean {
    return this.videoOn && this.cameraTrack !== null;
  }

  get hasAudio(): boolean {
    return this.audioTrack !== null;
  }

  get hasVideo(): boolean {
    return this.cameraTrack !== null;
  }

  onTrackChange(listener: TrackListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(kind: TrackKind, track: MediaStreamTrack | null): void {
    for (const l of this.listeners) l(kind, track);
  }

  setAudioEnabled(on: boolean): void {
    this.audioOn = on;
    const t = this.audioTrack;
    if (t) t.enabled = on;
  }

  setVideoEnabled(on: boolean): void {
    this.videoOn = on;
    const t = this.cameraTrack;
    if (t) t.enabled = on;
  }

  /** Replace the camera or microphone by another device; peers get the new track in place. */
  async switchDevice(kind: TrackKind, deviceId: string): Promise<void> {
    let got: MediaStream;
    try {
      got = await navigator.mediaDevices.getUserMedia(
        kind === "audio" ? { audio: constraint(deviceId) } : { video: constraint(deviceId) },
      );
    } catch (err) {
      throw err instanceof DOMException ? mediaError(err) : err;
    }
    const track = kind === "audio" ? got.getAudioTracks()[0] : got.getVideoTracks()[0];
    if (!track) throw new AppError("media", "the device gave no track");
    const old = kind === "audio" ? this.audioTrack : this.cameraTrack;
    track.enabled = kind === "audio" ? this.audioOn : this.videoOn;
    if (old) {
      this.stream.removeTrack(old);
      old.stop();
    }
    this.stream.addTrack(track);
    if (kind === "audio" || !this.screen) this.emit(kind, track);
  }

  async startScreenShare(): Promise<void> {
    if (this.screen) return;
    if (!navigator.mediaDevices?.getDisplayMedia) {
      throw new AppError("media", "this browser cannot share the screen");
    }
    let got: MediaStream;
    try {
      got = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (err) {
      if (err instanceof DOMException && err.name === "NotAllowedError") {
        throw new AppError("media", "screen sharing was cancelled or blocked");
      }
      throw err instanceof DOMException ? mediaError(err) : err;
    }
    const track = got.getVideoTracks()[0];
    if (!track) throw new AppError("media", "no screen was chosen");
    track.addEventListener("ended", () => this.stopScreenShare());
    this.screen = track;
    this.emit("video", track);
  }

  stopScreenShare(): void {
    if (!this.screen) return;
    this.screen.stop();
    this.screen = null;
    this.emit("video", this.cameraTrack);
  }

  stop(): void {
    this.screen?.stop();
    this.screen = null;
    for (const t of this.stream.getTracks()) t.stop();
    this.listeners.clear();
  }
}

export async function listDevices(): Promise<{ cameras: MediaDeviceInfo[]; microphones: MediaDeviceInfo[]; speakers: MediaDeviceInfo[] }> {
  const all = navigator.mediaDevices?.enumerateDevices ? await navigator.mediaDevices.enumerateDevices() : [];
  return {
    cameras: all.filter((d) => d.kind === "videoinput"),
    microphones: all.filter((d) => d.kind === "audioinput"),
    speakers: all.filter((d) => d.kind === "audiooutput"),
  };
}
