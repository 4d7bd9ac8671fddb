// Live media updates over Server-Sent Events. The server pushes; the page never polls.
// EventSource reconnects by itself; after a reconnect the page may have missed events, so it
// is asked to re-read (onResync), and the same happens when the server says "resync".

export function subscribe ({ ids = null, onItem, onDelete, onResync, onConnection }) {
  const url = ids && ids.length ? `/api/events?ids=${ids.join(',')}` : '/api/events'
  let source = null
  let wasLost = false
  let closed = false

  function open () {
    source = new EventSource(url)
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
        window.setTimeout(() => { if (!closed) open() }, 5000)
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
  return { close () { stopped = closed = true; source.close() } }
}
