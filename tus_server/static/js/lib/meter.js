// The upload progress readout: speed over a sliding window, time left, how often to repaint,
// and the 25 % steps announced to screen readers. Pure (times come in as arguments) so the
// smoothing can be tested without a browser (tests/js/meter.test.mjs); upload.js paints it.

/** Bytes per second over the last few seconds, so the speed follows changes but does not jump. */
export class SpeedMeter {
  constructor (windowMs = 4000, minSpanMs = 400) {
    this.windowMs = windowMs
    this.minSpanMs = minSpanMs // a shorter span says more about the timer than the network
    this.samples = []
  }

  reset () { this.samples = [] }

  add (bytes, now) {
    this.samples.push([now, bytes])
    while (this.samples.length > 2 && now - this.samples[0][0] > this.windowMs) this.samples.shift()
  }

  /** Bytes per second, or null while there is too little to say (or the offset went back). */
  speed () {
    if (this.samples.length < 2) return null
    const [t0, b0] = this.samples[0]
    const [t1, b1] = this.samples[this.samples.length - 1]
    if (t1 - t0 < this.minSpanMs || b1 < b0) return null
    return (b1 - b0) / ((t1 - t0) / 1000)
  }
}

/**
 * One upload's readout. `update` is called on every progress event and answers null when the
 * text should not be repainted yet (at most every `paintEveryMs`, but always at the end).
 */
export class ProgressMeter {
  constructor ({ windowMs = 4000, paintEveryMs = 150, step = 25 } = {}) {
    this.speedMeter = new SpeedMeter(windowMs)
    this.paintEveryMs = paintEveryMs
    this.step = step
    this.reset()
  }

  /** A new upload: no speed, no paint, no milestone announced. */
  reset () {
    this.speedMeter.reset()
    this.lastPaint = -Infinity
    this.lastMilestone = 0
  }

  /** Going on after a pause or an error: the time stopped must not count in the speed. */
  resume () {
    this.speedMeter.reset()
  }

  /**
   * { percent, speed, secondsLeft, milestone } or null (not yet). speed and secondsLeft are
   * null while unknown; milestone is the 25/50/75 step just passed, else null (100 is said
   * by the page's own "done" message).
   */
  update (sent, total, now) {
    this.speedMeter.add(sent, now)
    if (sent < total && now - this.lastPaint < this.paintEveryMs) return null
    this.lastPaint = now
    const percent = total > 0 ? Math.min(100, (100 * sent) / total) : 0
    const speed = this.speedMeter.speed()
    const known = speed !== null && speed > 0
    let milestone = Math.floor(percent / this.step) * this.step
    if (milestone > this.lastMilestone && milestone < 100) this.lastMilestone = milestone
    else milestone = null
    return {
      percent,
      speed: known ? speed : null,
      secondsLeft: known ? Math.max(0, total - sent) / speed : null,
      milestone
    }
  }
}
