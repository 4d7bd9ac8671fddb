// The page's credential when [auth] enabled is on: where it comes from, where it is kept and
// how every request carries it. Nothing here runs when auth is off.
//
// Hand-over. The platform opens the page as `/#token=<jwt>` (preferred) or `/?token=<jwt>`, or
// sets the cookie `[auth] cookie_name` where the page can read it, or pushes a token into an
// embedded page with postMessage (below). A fragment is never sent in an HTTP request, so the
// token stays out of access logs, proxy logs and Referer headers; the server serves the page
// shell without a credential for exactly that reason (see tus_server/auth/middleware.py).
// Either way the token is taken out of the address bar at once (history.replaceState), so it
// is not bookmarked, copied with the link or kept in the history.
//
// Keeping. sessionStorage: it lives as long as the tab, is not shared with other tabs or
// sites, and survives the page moving between /, /media and /media/<id> (a navigation cannot
// carry a header, so the shells load without one and this module brings the token back).
//
// Sending. `Authorization: Bearer` on every fetch and every tus request (tus-js-client's
// onBeforeRequest reads the token again for each request, so a refreshed one is used from the
// next request on);
// `?token=` only where a header cannot be set: EventSource and the src of <img> and <video>
// posters when playback links are not signed (the server accepts it on GET/HEAD only).
//
// Embedding API (window.postMessage), accepted from this origin and the explicit
// `[cors] allow_origins` (the platform), from the parent frame or the opener:
//   host → page  { type: 'tusflow:token', token: '<jwt>' }     use this token from now on
//   page → host  { type: 'tusflow:token-needed', reason }      reason 'expired' | 'missing':
//                a request was refused (401); answer with tusflow:token and the page goes on
//                (an upload stopped by the refusal resumes from the server's offset).

import { Credential, HANDOVER_PARAM, bearerToken, readCookie, takeHandover, tokenFromMessage, tokenStore, withTokenParam } from './lib/token.js'

const state = {
  enabled: false,
  queryToken: true,
  cookieName: '',
  hosts: [],
  // sessionStorage, or memory when it is unavailable (storage disabled, sandboxed frame)
  credential: new Credential(tokenStore(() => window.sessionStorage), () => readCookie(document.cookie, state.cookieName)),
  listeners: new Set()
}

function notify (event) {
  for (const listener of state.listeners) {
    try { listener(event) } catch (err) { console.error(err) }
  }
}

function tellHost (message) {
  const targets = new Set([window.parent !== window ? window.parent : null, window.opener].filter(Boolean))
  for (const target of targets) {
    for (const origin of [window.location.origin, ...state.hosts]) {
      try { target.postMessage(message, origin) } catch (_err) { /* closed or cross-origin mismatch */ }
    }
  }
}

function onMessage (event) {
  const token = tokenFromMessage(event, {
    ownOrigin: window.location.origin, hosts: state.hosts, parent: window.parent, opener: window.opener
  })
  if (token) setToken(token)
}

/** Start from the page's `config.auth`; a no-op when auth is off. */
export function setup (options) {
  if (!options || !options.enabled) return
  state.enabled = true
  state.queryToken = options.queryToken !== false
  state.cookieName = options.cookieName || ''
  state.hosts = options.hostOrigins || []
  // taken out of the address bar at once, so it is not bookmarked, shared or kept in history
  const handed = takeHandover(window.location.href)
  if (handed) window.history.replaceState(window.history.state, '', handed.address)
  if (handed && handed.token) state.credential.set(handed.token)
  window.addEventListener('message', onMessage)
}

export function enabled () {
  return state.enabled
}

/** The token requests carry now: the tab's own, else a readable cookie; '' for none. */
export function token () {
  if (!state.enabled) return ''
  return state.credential.token()
}

/** Use `value` from the next request on (a refresh pushed by the platform). */
export function setToken (value) {
  if (!state.enabled) return
  const kept = state.credential.set(value)
  if (kept) notify({ type: 'token', renewed: kept.renewed })
}

/** `headers` plus Authorization when there is a token. */
export function authorize (headers = {}) {
  const current = token()
  return current ? { ...headers, Authorization: `Bearer ${current}` } : headers
}

/**
 * A same-origin GET URL that an element or EventSource loads by itself, with `?token=`
 * added when it needs one: auth on, a token, and not a signed playback link (exp/sig opens
 * the media's files by itself and must stay as signed).
 */
export function withToken (url) {
  if (!state.queryToken) return url
  return withTokenParam(url, token(), window.location.href, HANDOVER_PARAM)
}

/**
 * A request sent with `sent` (the token it carried, '' for none) was answered 401. Returns
 * true when a newer token has arrived since, so the caller may simply try again; otherwise
 * the page is told the session is over and the host is asked for a fresh token.
 */
export function refused (sent) {
  if (!state.enabled) return false
  const { retry, reason } = state.credential.refused(sent)
  if (reason) {
    notify({ type: 'refused', reason })
    tellHost({ type: 'tusflow:token-needed', reason })
  }
  return retry
}

/** The token an outgoing tus request carries, read from its Authorization header. */
export function sentWith (req) {
  return bearerToken(req && req.getHeader && (req.getHeader('Authorization') || req.getHeader('authorization')))
}

/** listener({ type: 'refused', reason }) or listener({ type: 'token', renewed }) */
export function subscribe (listener) {
  state.listeners.add(listener)
  return () => state.listeners.delete(listener)
}

/**
 * tus-js-client options that carry the token on every request (POST, HEAD, PATCH, DELETE),
 * read anew each time, so a refreshed token is sent from the next request on. Only
 * onBeforeRequest, not also the `headers` option: the browser's XHR appends a header set
 * twice ("Bearer a, Bearer a"), which the server rightly refuses as an invalid token.
 */
export function tusOptions () {
  if (!state.enabled) return {}
  return {
    onBeforeRequest (req) {
      const current = token()
      if (current) req.setHeader('Authorization', `Bearer ${current}`)
    }
  }
}
