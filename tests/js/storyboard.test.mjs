// Storyboard thumbnails (lib/storyboard.js): the WebVTT the worker writes
// (transcoder/extras.py), what a lenient reader should still take, and what it must skip.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { cueAt, parseStoryboard, parseTimestamp, withSignatureOf } from '../../tus_server/static/js/lib/storyboard.js'

const ID = '0123456789abcdef0123456789abcdef'
const BASE = `https://video.example/media/${ID}/storyboard.vtt`
const SIGNED = `${BASE}?exp=1700000000&sig=c2lnbmF0dXJl&u=teacher-7`

// as StoryboardPlan.vtt writes it: 2 columns of 160x90 tiles
const WORKER_VTT = [
  'WEBVTT', '',
  '00:00:00.000 --> 00:00:10.000', 'storyboard.jpg#xywh=0,0,160,90', '',
  '00:00:10.000 --> 00:00:20.000', 'storyboard.jpg#xywh=160,0,160,90', '',
  '00:00:20.000 --> 00:00:24.500', 'storyboard.jpg#xywh=0,90,160,90', ''
].join('\n')

test('parseTimestamp reads hours, minutes, seconds and milliseconds', () => {
  assert.equal(parseTimestamp('00:00:00.000'), 0)
  assert.equal(parseTimestamp('01:02:03.500'), 3723.5)
  assert.equal(parseTimestamp('02:03.250'), 123.25)
  assert.equal(parseTimestamp('02:03,5'), 123.5) // comma and short fractions, as SRT-minded tools write
  assert.equal(parseTimestamp('  100:00:00.001 '), 360000.001)
})

test('parseTimestamp refuses what is not a timestamp', () => {
  for (const bad of ['', '00:00:00', '00:60.000', '00:61:00.000', '0:0:0.0', 'aa:bb.ccc', '00:00:00.0000', '-00:01.000']) {
    assert.equal(parseTimestamp(bad), null, bad)
  }
})

test('the worker\'s storyboard: every tile, sprite URL resolved against the VTT', () => {
  const cues = parseStoryboard(WORKER_VTT, BASE)
  assert.deepEqual(cues, [
    { start: 0, end: 10, url: `https://video.example/media/${ID}/storyboard.jpg`, x: 0, y: 0, w: 160, h: 90 },
    { start: 10, end: 20, url: `https://video.example/media/${ID}/storyboard.jpg`, x: 160, y: 0, w: 160, h: 90 },
    { start: 20, end: 24.5, url: `https://video.example/media/${ID}/storyboard.jpg`, x: 0, y: 90, w: 160, h: 90 }
  ])
})

test('a signed storyboard passes its signature on to the sprite', () => {
  const [cue] = parseStoryboard(WORKER_VTT, SIGNED)
  const url = new URL(cue.url)
  assert.equal(url.pathname, `/media/${ID}/storyboard.jpg`)
  assert.equal(url.searchParams.get('exp'), '1700000000')
  assert.equal(url.searchParams.get('sig'), 'c2lnbmF0dXJl')
  assert.equal(url.searchParams.get('u'), 'teacher-7')
})

test('CRLF, a byte order mark, cue identifiers, cue settings and pixel: fragments are read', () => {
  const text = '\uFEFFWEBVTT - thumbs\r\n\r\nNOTE made by hand\r\n\r\n' +
    'tile-1\r\n00:05.000 --> 00:10.000 align:start line:0\r\nsheet.jpg#xywh=pixel:320,180,160,90\r\n\r\n' +
    '00:00.000 --> 00:05.000\r\nsheet.jpg#xywh=0,0,160,90\r\n'
  const cues = parseStoryboard(text, BASE)
  assert.deepEqual(cues.map((c) => [c.start, c.end, c.x, c.y, c.w, c.h]), [[0, 5, 0, 0, 160, 90], [5, 10, 320, 180, 160, 90]])
})

test('cues come out sorted by start, whatever order the file has', () => {
  const text = 'WEBVTT\n\n00:20.000 --> 00:30.000\nc.jpg\n\n00:00.000 --> 00:10.000\na.jpg\n\n00:10.000 --> 00:20.000\nb.jpg\n'
  assert.deepEqual(parseStoryboard(text, BASE).map((c) => c.url.split('/').pop()), ['a.jpg', 'b.jpg', 'c.jpg'])
})

test('a cue without a tile fragment is a whole image (no size known)', () => {
  const [cue] = parseStoryboard('WEBVTT\n\n00:00.000 --> 00:10.000\nhttps://cdn.example/frame.jpg\n', BASE)
  assert.deepEqual(cue, { start: 0, end: 10, url: 'https://cdn.example/frame.jpg', x: 0, y: 0, w: null, h: null })
})

test('malformed cues are skipped, the good ones kept', () => {
  const text = [
    'WEBVTT', '',
    '00:00:00.000 --> 00:00:10.000', '', // timing without a payload
    '00:00:xx.000 --> 00:00:20.000', 'bad-start.jpg', '',
    '00:00:20.000 --> ', 'no-end.jpg', '',
    '00:00:30.000 --> 00:00:25.000', 'backwards.jpg', '',
    '00:00:40.000 00:00:50.000', 'no-arrow.jpg', '',
    '00:01:00.000 --> 00:01:10.000', 'http://[broken/x.jpg', '',
    '00:01:10.000 --> 00:01:20.000', 'good.jpg#xywh=1,2,3', '', // three numbers: no tile, still the image
    '00:01:20.000 --> 00:01:30.000', 'fine.jpg#xywh=0,0,160,90', ''
  ].join('\n')
  const cues = parseStoryboard(text, BASE)
  assert.deepEqual(cues.map((c) => [c.url.split('/').pop(), c.w]), [['good.jpg', null], ['fine.jpg', 160]])
})

test('nothing usable reads as no cues', () => {
  assert.deepEqual(parseStoryboard('', BASE), [])
  assert.deepEqual(parseStoryboard('WEBVTT\n', BASE), [])
  assert.deepEqual(parseStoryboard('<html>404 not found</html>', BASE), [])
})

test('cueAt: the last cue starting at or before the time', () => {
  const cues = parseStoryboard(WORKER_VTT, BASE)
  assert.equal(cueAt([], 5), null)
  assert.equal(cueAt(cues, -1), null)
  assert.equal(cueAt(cues, 0).x, 0)
  assert.equal(cueAt(cues, 9.999).x, 0)
  assert.equal(cueAt(cues, 10).x, 160)
  assert.equal(cueAt(cues, 22).y, 90)
  assert.equal(cueAt(cues, 1e9).y, 90) // past the end: the last tile
})

test('withSignatureOf signs only files of the same media folder on the same origin', () => {
  const sprite = `https://video.example/media/${ID}/storyboard.jpg`
  assert.match(withSignatureOf(sprite, SIGNED), /\?exp=1700000000&sig=c2lnbmF0dXJl&u=teacher-7$/)
  const other = `https://video.example/media/${'f'.repeat(32)}/storyboard.jpg`
  assert.equal(withSignatureOf(other, SIGNED), other)
  const elsewhere = `https://cdn.example/media/${ID}/storyboard.jpg`
  assert.equal(withSignatureOf(elsewhere, SIGNED), elsewhere)
  const alreadySigned = `${sprite}?exp=1&sig=other`
  assert.equal(withSignatureOf(alreadySigned, SIGNED), alreadySigned)
  assert.equal(withSignatureOf(sprite, BASE), sprite) // nothing to pass on
  const notMedia = 'https://video.example/static/x.vtt?exp=1&sig=s'
  assert.equal(withSignatureOf('https://video.example/static/x.jpg', notMedia), 'https://video.example/static/x.jpg')
})
