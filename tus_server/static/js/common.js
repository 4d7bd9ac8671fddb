// What every page shares: the server-provided data (config + UI strings), formatting in the
// page's language, the aria-live announcer, a small JSON fetch helper that carries the
// credential (auth.js), and the one-line "session expired" notice every page shows on a 401.

import * as auth from './auth.js'

const data = JSON.parse(document.getElementById('tusflow-data').textContent)

export const config = data.config
export const lang = data.lang || 'en'
export const pageData = data
const strings = data.strings || {}

auth.setup(config.auth)

/** The UI string for `key` with `{name}` placeholders filled from `vars`. */
export function t (key, vars = {}) {
  const text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key
  return text.replace(/\{(\w+)\}/g, (match, name) => (name in vars ? String(vars[name]) : match))
}

const number1 = new Intl.NumberFormat(lang, { maximumFractionDigits: 1 })
const number0 = new Intl.NumberFormat(lang, { maximumFractionDigits: 0 })
const byteUnits = ['kilobyte', 'megabyte', 'gigabyte', 'terabyte']
const byteFormats = byteUnits.map((unit) => new Intl.NumberFormat(lang, {
  style: 'unit', unit, unitDisplay: 'short', maximumFractionDigits: 1
}))

/** 67108864 → "67.1 MB" (decimal units, like operating systems show file sizes; from kB up). */
export function formatBytes (bytes) {
  if (bytes == null || !Number.isFinite(bytes)) return ''
  let value = Math.max(0, bytes) / 1000
  let unit = 0
  while (value >= 1000 && unit < byteUnits.length - 1) {
    value /= 1000
    unit += 1
  }
  return byteFormats[unit].format(value)
}

export function formatPercent (value) {
  return (value >= 10 || value === 0 ? number0 : number1).format(Math.floor(value * 10) / 10)
}

/** Seconds → "1:02:03" or "2:03", as players show positions. */
export function formatClock (seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) seconds = 0
  const s = Math.floor(seconds % 60)
  const m = Math.floor(seconds / 60) % 60
  const h = Math.floor(seconds / 3600)
  const pad = (n) => String(n).padStart(2, '0')
  return h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`
}

/** Seconds → "3 min 20 s" for durations a person waits through. */
export function formatWait (seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return ''
  seconds = Math.ceil(seconds)
  if (seconds >= 3600) {
    return t('time.hours_minutes', { h: Math.floor(seconds / 3600), m: Math.floor((seconds % 3600) / 60) })
  }
  if (seconds >= 60) return t('time.minutes_seconds', { m: Math.floor(seconds / 60), s: seconds % 60 })
  return t('time.seconds', { s: seconds })
}

export function formatBitrate (bitsPerSecond) {
  if (!bitsPerSecond) return ''
  if (bitsPerSecond >= 1e6) return t('bitrate.mbps', { value: number1.format(bitsPerSecond / 1e6) })
  return t('bitrate.kbps', { value: number0.format(bitsPerSecond / 1e3) })
}

const dateFormat = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' })

export function formatDate (iso) {
  if (!iso) return ''
  const date = new Date(iso)
  return Number.isNaN(date.getTime()) ? '' : dateFormat.format(date)
}

/**
 * Say `message` to screen reader users through the page's aria-live region. The region is
 * emptied first so the same message said twice is announced twice.
 */
export function announce (message, { assertive = false } = {}) {
  const region = document.getElementById(assertive ? 'live-assertive' : 'live-polite')
  if (!region) return
  region.textContent = ''
  window.setTimeout(() => { region.textContent = message }, 60)
}

export class ApiError extends Error {
  constructor (status, message) {
    super(message)
    this.status = status
  }
}

/**
 * fetch with the page's credential. A 401 is retried once when a fresher token arrived while
 * the request was out; otherwise the page shows the session notice.
 */
export async function authFetch (path, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const sent = auth.token()
    const response = await fetch(path, { ...options, headers: auth.authorize(options.headers || {}) })
    if (response.status !== 401 || !auth.refused(sent) || attempt > 0) return response
  }
}

/** fetch + JSON; a non-2xx answer throws ApiError with the server's one-line reason. */
export async function api (path, options = {}) {
  let response
  try {
    response = await authFetch(path, { ...options, headers: { Accept: 'application/json', ...(options.headers || {}) } })
  } catch (err) {
    throw new ApiError(0, err.message || 'network error')
  }
  if (response.status === 204) return null
  let body = null
  try {
    body = await response.json()
  } catch (_err) {
    body = null
  }
  if (response.status === 401) throw new ApiError(401, sessionMessage())
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || response.statusText || String(response.status))
  }
  return body
}

/** Show or hide an element, setting its text when showing. */
export function reveal (element, text) {
  if (text === undefined || text === null || text === '') {
    element.hidden = true
    if (text !== undefined) element.textContent = ''
    return
  }
  element.textContent = text
  element.hidden = false
}

export function titleOf (item) {
  return item.title || item.filename || t('list.untitled')
}

// ------------------------------------------------------------------ the session notice
// One line at the top of every page when the server refused the page's credential; it goes
// away when the platform hands over a fresh token (auth.js: tusflow:token).
auth.subscribe((event) => {
  const notice = document.getElementById('session-message')
  if (!notice) return
  if (event.type === 'refused') {
    reveal(notice, t(event.reason === 'missing' ? 'auth.missing' : 'auth.expired'))
    announce(notice.textContent, { assertive: true })
  } else if (event.type === 'token' && !notice.hidden) {
    reveal(notice, '')
    if (event.renewed) announce(t('auth.renewed'))
  }
})

/** The message for a refused credential, for places that show their own error text. */
export function sessionMessage () {
  return t(auth.token() ? 'auth.expired' : 'auth.missing')
}
