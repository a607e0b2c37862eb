// Microphone level (0..1) from the live track, for the pre-join meter and "you are speaking".

export class LevelMeter {
  private readonly ctx: AudioContext;
  private readonly analyser: AnalyserNode;
  private readonly source: MediaStreamAudioSourceNode;
  private readonly buffer: Float32Array<ArrayBuffer>;
  private timer: number | null = null;

  constructor(track: MediaStreamTrack) {
    this.ctx = new AudioContext();
    this.source = this.ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.buffer = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    void this.ctx.resume().catch(() => undefined);
  }

  /** RMS of the last window, scaled so normal speech reads about 0.3-0.8. */
  level(): number {
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const v of this.buffer) sum += v * v;
    const rms = Math.sqrt(sum / this.buffer.length);
    return Math.min(1, rms * 4);
  }

  watch(onLevel: (level: number) => void, everyMs = 100): void {
    this.unwatch();
    this.timer = window.setInterval(() => onLevel(this.level()), everyMs);
  }

  unwatch(): void {
    if (this.timer !== null) window.clearInterval(this.timer);
    this.timer = null;
  }

  close(): void {
    this.unwatch();
    this.source.disconnect();
    void this.ctx.close().catch(() => undefined);
  }
}
