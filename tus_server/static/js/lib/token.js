// The pure half of the page's credential hand-off (auth.js does the wiring to window,
// document and fetch): reading a token handed over in the address, the cookie, the keeping in
// sessionStorage, which postMessage may set it, ?token= on links elements load by themselves,
// and when a 401 means "try again" versus "ask the platform". Everything the browser owns
// comes in as an argument, so tests/js/token.test.mjs runs this under Node.

export const HANDOVER_PARAM = 'token'
export const STORAGE_KEY = 'tusflow.token'

/**
 * A token handed over as `#token=` (preferred: never sent to a server) or `?token=` in
 * `href`. null when neither is there; otherwise { token, address } where `address` is the
 * path, query and fragment to show instead, with the token removed and everything else kept.
 * `token` is '' when the parameter was there but empty (the address is cleaned all the same).
 */
export function takeHandover (href, param = HANDOVER_PARAM) {
  const url = new URL(href)
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ''))
  if (!fragment.has(param) && !url.searchParams.has(param)) return null
  const token = fragment.get(param) || url.searchParams.get(param) || ''
  fragment.delete(param)
  url.searchParams.delete(param)
  const rest = fragment.toString()
  url.hash = rest ? `#${rest}` : ''
  return { token, address: url.pathname + url.search + url.hash }
}

/** The value of cookie `name` in a `document.cookie` string, percent-decoded; '' for none. */
export function readCookie (cookies, name) {
  if (!name || !cookies) return ''
  for (const part of cookies.split(';')) {
    const [key, ...rest] = part.trim().split('=')
    if (key === name) {
      const value = rest.join('=')
      try { return decodeURIComponent(value) } catch (_err) { return value }
    }
  }
  return ''
}

/**
 * Where the tab keeps its token: `storage()` (sessionStorage, read through a function because
 * merely touching it throws where storage is disabled), else memory for this page's life.
 */
export function tokenStore (storage, key = STORAGE_KEY) {
  let memory = ''
  return {
    get () {
      try {
        return storage().getItem(key) || ''
      } catch (_err) {
        return memory
      }
    },
    set (token) {
      memory = token
      try {
        if (token) storage().setItem(key, token)
        else storage().removeItem(key)
      } catch (_err) { /* memory only */ }
    }
  }
}

/**
 * The token in a `tusflow:token` message, or '' when the message must be ignored: another
 * shape, an origin that is neither the page's own nor one of `hosts` (the platform), or a
 * sender that is not the frame's parent or the window's opener.
 */
export function tokenFromMessage (event, { ownOrigin, hosts = [], parent = null, opener = null }) {
  const data = event && event.data
  if (!data || typeof data !== 'object' || data.type !== 'tusflow:token') return ''
  if (typeof data.token !== 'string' || !data.token) return ''
  if (event.origin !== ownOrigin && !hosts.includes(event.origin)) return ''
  if (event.source == null || (event.source !== parent && event.source !== opener)) return ''
  return data.token
}

/**
 * `url` (relative to `pageHref`) with `?token=` added, for what loads by itself and cannot
 * send a header. Unchanged when there is no token, when it leaves the page's origin (the
 * token goes nowhere else) or when it is a signed playback link (exp/sig must stay as signed).
 */
export function withTokenParam (url, token, pageHref, param = HANDOVER_PARAM) {
  if (!url || !token) return url
  let parsed, page
  try {
    page = new URL(pageHref)
    parsed = new URL(url, page)
  } catch (_err) {
    return url
  }
  if (parsed.origin !== page.origin || parsed.searchParams.has('sig')) return url
  parsed.searchParams.set(param, token)
  return parsed.pathname + parsed.search + parsed.hash
}

/** The token in an `Authorization: Bearer …` header value; '' for none. */
export function bearerToken (header) {
  return (header || '').replace(/^Bearer\s+/i, '')
}

/**
 * The page's credential and what it last had refused. `stored` is a tokenStore, `cookie()`
 * the readable cookie's token (the fallback when the tab holds none).
 */
export class Credential {
  constructor (stored, cookie = () => '') {
    this.stored = stored
    this.cookie = cookie
    this.refusedToken = '' // the token the server last refused ('' none, '-' a request without one)
  }

  token () {
    return this.stored.get() || this.cookie()
  }

  /** Keep `value` from the next request on; { renewed } says whether it replaces a refused one. */
  set (value) {
    if (!value) return null
    this.stored.set(value)
    const renewed = this.refusedToken !== ''
    this.refusedToken = ''
    return { renewed }
  }

  /**
   * A request that carried `sent` ('' for none) was answered 401. { retry: true } when a
   * newer token arrived meanwhile; otherwise { retry: false, reason } where reason
   * ('expired' | 'missing') is given only for the first refusal since the last good token,
   * so the page and the platform are told once.
   */
  refused (sent) {
    const current = this.token()
    if (current && current !== sent) return { retry: true, reason: null }
    const first = this.refusedToken === ''
    this.refusedToken = sent || '-'
    return { retry: false, reason: first ? (sent ? 'expired' : 'missing') : null }
  }
}
