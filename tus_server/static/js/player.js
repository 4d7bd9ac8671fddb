// The player page: hls.js where Media Source Extensions exist (it gives the quality menu),
// the browser's own HLS otherwise (Safari on iPhone). Own controls, because the seek bar has
// to show storyboard thumbnails on hover, which native controls cannot.
//
// With auth on, the media's files need a credential the <video> element cannot send as a
// header. With [auth] signed_playback the API hands out signed URLs (exp/sig) and the server
// carries the signature into every playlist URI, so nothing else is needed; the links expire,
// so a refused segment re-reads the item for fresh ones and playback goes on where it was.
// Without signing, hls.js sends the page's token as a header (xhrSetup), and the poster and
// native HLS get ?token=.

import * as auth from './auth.js'
import { announce, api, authFetch, formatBitrate, formatBytes, formatClock, formatDate, pageData, reveal, t, titleOf } from './common.js'
import { subscribe } from './live.js'
import { paintStatus, renditionNames } from './status.js'
import { cueAt, parseStoryboard } from './lib/storyboard.js'

const $ = (id) => document.getElementById(id)
const els = {
  title: $('media-title'),
  player: $('player'),
  video: $('video'),
  message: $('player-message'),
  play: $('play'),
  seek: $('seek'),
  time: $('time'),
  mute: $('mute'),
  quality: $('quality'),
  fullscreen: $('fullscreen'),
  preview: $('seek-preview'),
  previewImage: document.querySelector('#seek-preview .seek-preview-image'),
  previewTime: document.querySelector('#seek-preview .seek-preview-time'),
  notReady: $('not-ready'),
  notReadyText: $('not-ready-text'),
  description: $('media-description'),
  facts: $('media-facts')
}

const mediaId = pageData.mediaId
let hls = null
let started = false
let storyboard = []
let seeking = false
let relinkedAt = 0
const RELINK_EVERY_MS = 30_000

// ------------------------------------------------------------------ details
function showDetails (item) {
  els.title.textContent = titleOf(item)
  document.title = `${titleOf(item)} · ${t('app.name')}`
  els.description.textContent = item.description || ''
  const facts = []
  if (item.duration) facts.push([t('player.duration'), formatClock(item.duration)])
  if (item.renditions && item.renditions.length) facts.push([t('player.renditions'), renditionNames(item)])
  if (item.size) facts.push([t('player.size'), `${item.filename ? item.filename + ' · ' : ''}${formatBytes(item.size)}`])
  if (item.created_at) facts.push([t('player.added'), formatDate(item.created_at)])
  els.facts.replaceChildren(...facts.flatMap(([term, value]) => {
    const dt = document.createElement('dt')
    dt.textContent = term
    const dd = document.createElement('dd')
    dd.textContent = value
    return [dt, dd]
  }))
}

function showWaiting (item) {
  els.notReady.hidden = false
  const { label, detail } = paintStatus(els.notReady, item)
  els.notReadyText.textContent = item.state === 'failed' ? detail : t('player.not_ready')
  return { label, detail }
}

// ------------------------------------------------------------------ playback
function start (item) {
  if (started) return
  started = true
  els.notReady.hidden = true
  els.player.hidden = false
  const video = els.video
  if (item.poster) video.poster = auth.withToken(item.poster)
  const Hls = window.Hls
  if (Hls && Hls.isSupported()) {
    hls = new Hls({ enableWorker: true, startLevel: -1, xhrSetup: carryToken })
    hls.on(Hls.Events.MANIFEST_PARSED, () => buildQualityMenu())
    hls.on(Hls.Events.LEVEL_SWITCHED, () => labelAuto())
    hls.on(Hls.Events.ERROR, (_event, data) => {
      // hls.js keeps retrying a refused segment without ever calling it fatal: act on the first
      const refused = data.type === Hls.ErrorTypes.NETWORK_ERROR && data.response && data.response.code === 403
      if (refused && relink()) return
      if (!data.fatal) return
      if (refused) {
        reveal(els.message, t('player.error', { reason: data.details }))
      } else if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
        hls.startLoad()
      } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError()
      } else {
        reveal(els.message, t('player.error', { reason: data.details }))
        hls.destroy()
      }
    })
    hls.loadSource(item.playlist)
    hls.attachMedia(video)
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.src = auth.withToken(item.playlist)
    video.addEventListener('error', () => relink())
    buildQualityMenu(item)
  } else {
    reveal(els.message, t('player.unsupported'))
  }
  wireControls()
  if (item.storyboard) loadStoryboard(item.storyboard)
}

/** hls.js requests: the page's token as a header, unless the URL is a signed link. */
function carryToken (xhr, url) {
  if (!auth.enabled() || /[?&]sig=/.test(url)) return
  if (new URL(url, window.location.href).origin !== window.location.origin) return
  const headers = auth.authorize({})
  if (headers.Authorization) xhr.setRequestHeader('Authorization', headers.Authorization)
}

/**
 * The signed links expired (or were refused) mid-playback: read the item again for fresh
 * ones and go on from the same position. At most once every RELINK_EVERY_MS, so a link that
 * is refused for another reason does not loop; false when it did not start for that reason.
 */
function relink () {
  const now = Date.now()
  if (now - relinkedAt < RELINK_EVERY_MS) return false
  relinkedAt = now
  api(`/api/media/${mediaId}`).then(replay, (err) => reveal(els.message, t('player.error', { reason: err.message })))
  return true
}

function replay (fresh) {
  if (!fresh.playlist) return
  const video = els.video
  const position = video.currentTime
  const playing = !video.paused
  if (hls) {
    hls.loadSource(fresh.playlist)
    hls.once(window.Hls.Events.MANIFEST_PARSED, () => {
      hls.startLoad(position)
      video.currentTime = position
    })
  } else {
    video.src = auth.withToken(fresh.playlist)
    video.addEventListener('loadedmetadata', () => { video.currentTime = position }, { once: true })
  }
  if (playing) video.play().catch(() => {})
}

function buildQualityMenu (item) {
  const options = [new Option(t('player.auto'), '-1')]
  if (hls) {
    const levels = hls.levels.map((level, index) => ({ level, index }))
      .sort((a, b) => (b.level.height || 0) - (a.level.height || 0))
    for (const { level, index } of levels) {
      options.push(new Option(t('player.level', { height: level.height, bitrate: formatBitrate(level.bitrate) }), String(index)))
    }
  } else if (item) {
    // native HLS chooses by itself; list what exists, but only Auto can be picked
    for (const r of (item.renditions || []).slice().sort((a, b) => b.height - a.height)) {
      const option = new Option(t('player.level', { height: r.height, bitrate: formatBitrate(r.bandwidth) }), r.name)
      option.disabled = true
      options.push(option)
    }
  }
  els.quality.replaceChildren(...options)
  els.quality.value = '-1'
  labelAuto()
}

function labelAuto () {
  if (!hls) return
  const auto = els.quality.querySelector('option[value="-1"]')
  const level = hls.levels[hls.currentLevel]
  if (auto) auto.textContent = hls.autoLevelEnabled && level ? t('player.auto_current', { level: `${level.height}p` }) : t('player.auto')
}

function wireControls () {
  const video = els.video
  const togglePlay = () => {
    if (video.paused || video.ended) {
      video.play().catch((err) => reveal(els.message, t('player.error', { reason: err.message })))
    } else {
      video.pause()
    }
  }
  els.play.addEventListener('click', togglePlay)
  video.addEventListener('click', togglePlay)
  const paintPlay = () => {
    const playing = !video.paused && !video.ended
    els.play.classList.toggle('playing', playing)
    els.play.setAttribute('aria-label', t(playing ? 'player.pause' : 'player.play'))
  }
  video.addEventListener('play', paintPlay)
  video.addEventListener('pause', paintPlay)
  video.addEventListener('ended', paintPlay)
  video.addEventListener('playing', () => reveal(els.message, ''))

  const paintTime = () => {
    const duration = Number.isFinite(video.duration) ? video.duration : 0
    els.seek.max = String(duration)
    if (!seeking) els.seek.value = String(video.currentTime)
    const text = t('player.seek_value', { current: formatClock(video.currentTime), total: formatClock(duration) })
    els.seek.setAttribute('aria-valuetext', text)
    els.time.textContent = `${formatClock(video.currentTime)} / ${formatClock(duration)}`
  }
  video.addEventListener('timeupdate', paintTime)
  video.addEventListener('durationchange', paintTime)
  video.addEventListener('loadedmetadata', paintTime)
  els.seek.addEventListener('pointerdown', () => { seeking = true })
  els.seek.addEventListener('pointerup', () => { seeking = false })
  els.seek.addEventListener('input', () => {
    video.currentTime = Number(els.seek.value)
    paintTime()
    if (document.activeElement === els.seek && !els.seek.matches(':hover')) previewAt(Number(els.seek.value), thumbX())
  })
  els.seek.addEventListener('blur', hidePreview)

  els.mute.addEventListener('click', () => {
    video.muted = !video.muted
  })
  video.addEventListener('volumechange', () => {
    els.mute.setAttribute('aria-pressed', String(video.muted))
    els.mute.setAttribute('aria-label', t(video.muted ? 'player.unmute' : 'player.mute'))
  })

  els.quality.addEventListener('change', () => {
    if (!hls) return
    hls.currentLevel = Number(els.quality.value)
    labelAuto()
  })

  els.fullscreen.addEventListener('click', () => {
    if (document.fullscreenElement) document.exitFullscreen()
    else if (els.player.requestFullscreen) els.player.requestFullscreen().catch(() => {})
  })
  document.addEventListener('fullscreenchange', () => {
    els.fullscreen.setAttribute('aria-label', t(document.fullscreenElement ? 'player.exit_fullscreen' : 'player.fullscreen'))
  })

  // Keyboard: space or k plays/pauses, arrows seek, m mutes, f full screen; form controls
  // keep their own keys.
  els.player.addEventListener('keydown', (event) => {
    const tag = event.target.tagName
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'BUTTON' || event.altKey || event.ctrlKey || event.metaKey) return
    const key = event.key.toLowerCase()
    if (key === ' ' || key === 'k') togglePlay()
    else if (key === 'arrowleft') video.currentTime = Math.max(0, video.currentTime - 5)
    else if (key === 'arrowright') video.currentTime = Math.min(video.duration || 0, video.currentTime + 5)
    else if (key === 'm') video.muted = !video.muted
    else if (key === 'f') els.fullscreen.click()
    else return
    event.preventDefault()
  })
  els.video.tabIndex = 0
  els.video.setAttribute('aria-label', els.title.textContent)

  const wrap = els.seek.parentElement
  wrap.addEventListener('pointermove', (event) => {
    const rect = els.seek.getBoundingClientRect()
    const fraction = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width))
    const duration = Number(els.seek.max) || 0
    previewAt(fraction * duration, event.clientX - wrap.getBoundingClientRect().left)
  })
  wrap.addEventListener('pointerleave', hidePreview)
}

// ------------------------------------------------------------------ storyboard
async function loadStoryboard (url) {
  try {
    const response = await authFetch(url)
    if (!response.ok) return
    // sprite URLs: the storyboard's own signature (lib/storyboard.js), else ?token= for CSS
    storyboard = parseStoryboard(await response.text(), new URL(url, window.location.href).href)
      .map((cue) => ({ ...cue, url: auth.withToken(cue.url) }))
    els.player.dataset.storyboardCues = String(storyboard.length)
  } catch (err) {
    console.warn('storyboard unavailable', err)
  }
}

function thumbX () {
  const max = Number(els.seek.max) || 1
  return (Number(els.seek.value) / max) * els.seek.getBoundingClientRect().width
}

function previewAt (time, x) {
  const duration = Number(els.seek.max) || 0
  if (!duration) return
  const cue = cueAt(storyboard, time)
  const image = els.previewImage
  if (cue && cue.w) {
    image.hidden = false
    image.style.width = `${cue.w}px`
    image.style.height = `${cue.h}px`
    image.style.backgroundImage = `url("${cue.url}")`
    image.style.backgroundPosition = `-${cue.x}px -${cue.y}px`
  } else {
    image.hidden = true
  }
  els.previewTime.textContent = formatClock(time)
  const wrapWidth = els.seek.parentElement.getBoundingClientRect().width
  const half = ((cue && cue.w) || 60) / 2
  els.preview.style.left = `${Math.min(wrapWidth - half, Math.max(half, x))}px`
  els.preview.hidden = false
}

function hidePreview () {
  els.preview.hidden = true
}

// ------------------------------------------------------------------ start
// Playable media already have a master with at least one rendition: play it now. Later
// renditions reach players that load afterwards (players never re-fetch a master).
function watchable (item) {
  return item.state === 'ready' || item.state === 'playable'
}

async function main () {
  let item
  try {
    item = await api(`/api/media/${mediaId}`)
  } catch (err) {
    els.notReady.hidden = false
    els.notReadyText.textContent = err.status === 404 ? t('player.not_found') : t('player.error', { reason: err.message })
    return
  }
  showDetails(item)
  if (watchable(item)) {
    start(item)
    return
  }
  showWaiting(item)
  const live = subscribe({
    ids: [mediaId],
    onItem: (next) => {
      if (next.id !== mediaId) return
      const changed = next.state !== item.state
      item = next
      showDetails(item)
      if (watchable(item)) {
        if (item.state === 'ready') live.close()
        start(item)
        if (changed) announce(t('announce.state', { title: titleOf(item), state: t(`state.${item.state}`), detail: '' }))
        return
      }
      const { label, detail } = showWaiting(item)
      if (changed) announce(t('announce.state', { title: titleOf(item), state: label, detail }))
    },
    onDelete: () => {
      live.close()
      els.notReadyText.textContent = t('player.not_found')
    },
    onResync: async () => {
      try {
        const next = await api(`/api/media/${mediaId}`)
        item = next
        if (watchable(next)) {
          if (next.state === 'ready') live.close()
          start(next)
        } else {
          showWaiting(next)
        }
      } catch (_err) { /* the stream will tell */ }
    }
  })
}

main()
