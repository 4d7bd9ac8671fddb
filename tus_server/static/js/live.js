// Live media updates over Server-Sent Events. The server pushes; the page never polls.
// EventSource reconnects by itself; after a reconnect the page may have missed events, so it
// is asked to re-read (onResync), and the same happens when the server says "resync".
// EventSource cannot send a header, so with auth on the token rides in ?token= (read anew at
// every (re)connect, so a refreshed token is used), and a refused stream, which EventSource
// cannot tell apart from a network error, is told by one ordinary request that can.

import * as auth from './auth.js'
import { authFetch } from './common.js'

export function subscribe ({ ids = null, onItem, onDelete, onResync, onConnection }) {
  const url = ids && ids.length ? `/api/events?ids=${ids.join(',')}` : '/api/events'
  let source = null
  let wasLost = false
  let closed = false
  let waitingForToken = false

  function open () {
    source = new EventSource(auth.withToken(url))
    source.addEventListener('open', () => {
      if (onConnection) onConnection(true)
      if (wasLost && onResync) onResync()
      wasLost = false
    })
    source.addEventListener('error', () => {
      wasLost = true
      if (onConnection) onConnection(false)
      if (source.readyState === EventSource.CLOSED && !closed) {
        // the browser gave up (e.g. a non-200 answer): try again later ourselves
        if (auth.enabled()) {
          authFetch('/api/media?limit=1', { headers: { Accept: 'application/json' } }).then((response) => {
            // refused: reconnecting cannot help until the platform hands over a new token
            if (response.status === 401) waitingForToken = true
            else window.setTimeout(reopen, 5000)
          }, () => window.setTimeout(reopen, 5000))
        } else {
          window.setTimeout(reopen, 5000)
        }
      }
    })
    source.addEventListener('media', (event) => {
      try { onItem(JSON.parse(event.data)) } catch (err) { console.error(err) }
    })
    source.addEventListener('delete', (event) => {
      try { onDelete && onDelete(JSON.parse(event.data).id) } catch (err) { console.error(err) }
    })
    source.addEventListener('resync', () => { if (onResync) onResync() })
  }

  function reopen () {
    if (!closed && !waitingForToken) open()
  }
  const unsubscribeAuth = auth.subscribe((event) => {
    if (event.type !== 'token' || !waitingForToken) return
    waitingForToken = false
    reopen()
  })

  open()
  // A page kept in the back/forward cache comes back with its stream closed: reopen, re-read.
  let stopped = false
  window.addEventListener('pagehide', () => { closed = true; source.close() })
  window.addEventListener('pageshow', (event) => {
    if (!event.persisted || stopped) return
    closed = false
    wasLost = true
    open()
  })
  return { close () { stopped = closed = true; source.close(); unsubscribeAuth() } }
}
