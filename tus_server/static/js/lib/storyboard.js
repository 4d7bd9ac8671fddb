// Storyboard thumbnails: a WebVTT file whose cues point into a sprite image with a media
// fragment, e.g. "storyboard.jpg#xywh=160,0,160,90" for 00:00:10.000 --> 00:00:20.000.
// The sprite is a relative URL, which drops the query of the VTT it was read from; when that
// query was a playback signature (exp/sig/u, valid for every file of the media), each sprite
// URL under the same media folder gets it back, as the server does for playlist URIs.
// Pure (no DOM): tests/js/storyboard.test.mjs runs it under Node.

const SIGNATURE = ['exp', 'sig', 'u']

const TIMESTAMP = /^(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})$/

/** "01:02:03.500" or "02:03.5" → seconds; null for anything else (minutes, seconds up to 59). */
export function parseTimestamp (text) {
  const match = TIMESTAMP.exec(text.trim())
  if (!match) return null
  const [, h, m, s, ms] = match
  if (Number(m) > 59 || Number(s) > 59) return null
  return (Number(h || 0) * 3600) + Number(m) * 60 + Number(s) + Number(ms.padEnd(3, '0')) / 1000
}

/** Cues as { start, end, url, x, y, w, h }, sorted by start; `baseUrl` resolves relative URLs. */
export function parseStoryboard (text, baseUrl) {
  const cues = []
  const blocks = text.replace(/\r\n?/g, '\n').split(/\n{2,}/)
  for (const block of blocks) {
    const lines = block.split('\n').map((l) => l.trim()).filter(Boolean)
    const timing = lines.findIndex((l) => l.includes('-->'))
    if (timing < 0 || timing + 1 >= lines.length) continue
    const [startText, rest] = lines[timing].split('-->')
    const start = parseTimestamp(startText)
    const end = parseTimestamp((rest || '').trim().split(/\s+/)[0] || '')
    if (start === null || end === null || end < start) continue
    const target = lines[timing + 1]
    const [path, fragment = ''] = target.split('#')
    let url
    try {
      url = withSignatureOf(new URL(path, baseUrl).href, baseUrl)
    } catch (_err) {
      continue
    }
    const xywh = /xywh=(?:pixel:)?(\d+),(\d+),(\d+),(\d+)/.exec(fragment)
    cues.push({
      start,
      end,
      url,
      x: xywh ? Number(xywh[1]) : 0,
      y: xywh ? Number(xywh[2]) : 0,
      w: xywh ? Number(xywh[3]) : null,
      h: xywh ? Number(xywh[4]) : null
    })
  }
  return cues.sort((a, b) => a.start - b.start)
}

/** The cue showing at `time` (the last one starting at or before it). */
export function cueAt (cues, time) {
  let lo = 0
  let hi = cues.length - 1
  let found = null
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    if (cues[mid].start <= time) {
      found = cues[mid]
      lo = mid + 1
    } else {
      hi = mid - 1
    }
  }
  return found
}

/** `url` with the playback signature of `signedUrl` when both lie in the same media folder. */
export function withSignatureOf (url, signedUrl) {
  const target = new URL(url)
  const source = new URL(signedUrl)
  if (!source.searchParams.has('sig') || target.searchParams.has('sig') || target.origin !== source.origin) return url
  const folder = /^\/media\/[0-9a-f]{32}\//.exec(source.pathname)
  if (!folder || !target.pathname.startsWith(folder[0])) return url
  for (const name of SIGNATURE) {
    if (source.searchParams.has(name)) target.searchParams.set(name, source.searchParams.get(name))
  }
  return target.href
}
