// What every page shares: the server-provided data (config + UI strings), formatting in the
// page's language, the aria-live announcer, a small JSON fetch helper that carries the
// credential (auth.js), and the one-line "session expired" notice every page shows on a 401.

import * as auth from './auth.js'
import { createFormat, translate } from './lib/format.js'

const data = JSON.parse(document.getElementById('tusflow-data').textContent)

export const config = data.config
export const lang = data.lang || 'en'
export const pageData = data
const strings = data.strings || {}

auth.setup(config.auth)

/** The UI string for `key` with `{name}` placeholders filled from `vars`. */
export function t (key, vars = {}) {
  return translate(strings, key, vars)
}

// the formatters, bound to the page's language (lib/format.js)
export const { formatBytes, formatPercent, formatClock, formatWait, formatBitrate, formatDate } = createFormat(lang, t)

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
