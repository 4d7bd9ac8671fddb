// The upload progress readout (lib/meter.js): speed over a sliding window, time left,
// repaint throttling and the 25 % announcements. Times are given, never read from a clock.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { ProgressMeter, SpeedMeter } from '../../tus_server/static/js/lib/meter.js'

const MB = 1_000_000

test('SpeedMeter says nothing until two samples span enough time', () => {
  const meter = new SpeedMeter()
  assert.equal(meter.speed(), null)
  meter.add(0, 1000)
  assert.equal(meter.speed(), null)
  meter.add(100_000, 1399) // 399 ms: too short to mean anything
  assert.equal(meter.speed(), null)
  meter.add(400_000, 1400)
  assert.equal(meter.speed(), 1 * MB)
})

test('SpeedMeter: a steady rate is measured exactly', () => {
  const meter = new SpeedMeter()
  for (let i = 0; i <= 10; i += 1) meter.add(i * 250_000, i * 500)
  assert.equal(meter.speed(), 500_000)
})

test('SpeedMeter forgets samples older than the window, so it follows a slowdown', () => {
  const meter = new SpeedMeter(4000)
  // 10 MB/s for 5 s, then 1 MB/s for 5 s
  let bytes = 0
  for (let ms = 0; ms <= 5000; ms += 500) meter.add((bytes = ms * 10_000), ms)
  assert.equal(meter.speed(), 10 * MB)
  for (let ms = 5500; ms <= 10_000; ms += 500) meter.add((bytes += 500_000), ms)
  assert.equal(meter.speed(), 1 * MB)
  assert.ok(meter.samples.every(([time]) => 10_000 - time <= 4000))
})

test('SpeedMeter keeps the last two samples even when they are far apart', () => {
  const meter = new SpeedMeter(4000)
  meter.add(0, 0)
  meter.add(10 * MB, 10_000)
  assert.equal(meter.speed(), 1 * MB)
  meter.add(40 * MB, 40_000)
  assert.equal(meter.samples.length, 2)
  assert.equal(meter.speed(), 1 * MB)
})

test('SpeedMeter says nothing when the offset went back (a chunk sent again)', () => {
  const meter = new SpeedMeter()
  meter.add(5 * MB, 0)
  meter.add(2 * MB, 1000)
  assert.equal(meter.speed(), null)
  meter.reset()
  assert.equal(meter.speed(), null)
  assert.deepEqual(meter.samples, [])
})

test('ProgressMeter repaints at most every 150 ms, but always at the end', () => {
  const meter = new ProgressMeter()
  assert.notEqual(meter.update(0, 10 * MB, 1000), null)
  assert.equal(meter.update(1 * MB, 10 * MB, 1100), null)
  assert.notEqual(meter.update(2 * MB, 10 * MB, 1150), null)
  assert.equal(meter.update(3 * MB, 10 * MB, 1160), null)
  const last = meter.update(10 * MB, 10 * MB, 1170)
  assert.notEqual(last, null)
  assert.equal(last.percent, 100)
})

test('ProgressMeter: percent, speed and time left', () => {
  const meter = new ProgressMeter()
  meter.update(0, 100 * MB, 0)
  const readout = meter.update(20 * MB, 100 * MB, 2000)
  assert.equal(readout.percent, 20)
  assert.equal(readout.speed, 10 * MB)
  assert.equal(readout.secondsLeft, 8)
})

test('ProgressMeter: unknown speed and time left at the start and while stalled', () => {
  const meter = new ProgressMeter()
  const first = meter.update(0, 100 * MB, 0)
  assert.equal(first.speed, null)
  assert.equal(first.secondsLeft, null)
  const stalled = meter.update(0, 100 * MB, 3000)
  assert.equal(stalled.speed, null) // 0 B/s would mean "forever left"
  assert.equal(stalled.secondsLeft, null)
})

test('ProgressMeter: an empty file is 0 % until done, and never more than 100 %', () => {
  const meter = new ProgressMeter()
  assert.equal(meter.update(0, 0, 0).percent, 0)
  const over = new ProgressMeter()
  over.update(0, 10, 0)
  const readout = over.update(20, 10, 1000)
  assert.equal(readout.percent, 100)
  assert.equal(readout.secondsLeft, 0)
})

test('ProgressMeter announces 25, 50 and 75 once each, never 100', () => {
  const meter = new ProgressMeter()
  const said = []
  for (let i = 0; i <= 100; i += 1) {
    const readout = meter.update(i, 100, i * 1000)
    if (readout && readout.milestone) said.push(readout.milestone)
  }
  assert.deepEqual(said, [25, 50, 75])
})

test('ProgressMeter: a jump announces the step reached, not the ones skipped', () => {
  const meter = new ProgressMeter()
  meter.update(10, 100, 0)
  assert.equal(meter.update(80, 100, 1000).milestone, 75)
  assert.equal(meter.update(90, 100, 2000).milestone, null)
})

test('ProgressMeter: resume forgets the speed but not the milestones; reset forgets both', () => {
  const meter = new ProgressMeter()
  meter.update(0, 100 * MB, 0)
  assert.equal(meter.update(30 * MB, 100 * MB, 1000).milestone, 25)
  meter.resume() // a pause: the time stopped must not lower the speed
  assert.equal(meter.update(30 * MB, 100 * MB, 60_000).speed, null)
  const after = meter.update(40 * MB, 100 * MB, 61_000)
  assert.equal(after.speed, 10 * MB)
  assert.equal(after.milestone, null)
  meter.reset()
  assert.equal(meter.update(30 * MB, 100 * MB, 61_001).milestone, 25) // also paints at once
})
