// The media list: every video with its live status. The first page comes from /api/media;
// after that the server pushes changes over /api/events and cards update in place.

import * as auth from './auth.js'
import { announce, api, ApiError, authFetch, config, formatBytes, formatClock, formatDate, reveal, sessionMessage, t, titleOf } from './common.js'
import { subscribe } from './live.js'
import { describe, paintStatus } from './status.js'

const $ = (id) => document.getElementById(id)
const els = {
  list: $('media-list'),
  empty: $('list-empty'),
  error: $('list-error'),
  more: $('load-more'),
  flash: $('flash'),
  connection: $('connection'),
  dialog: $('confirm-delete'),
  dialogText: $('confirm-text'),
  template: $('media-card')
}

const cards = new Map() // id → { li, item }
const gone = new Set() // deleted ids: a list read in flight must not bring them back
let nextUrl = null
let loading = null

// ------------------------------------------------------------------ cards
function createCard (item) {
  const li = els.template.content.firstElementChild.cloneNode(true)
  li.dataset.id = item.id
  li.querySelector('.retry').addEventListener('click', () => retry(item.id))
  li.querySelector('.delete').addEventListener('click', () => confirmDelete(item.id))
  const entry = { li, item: null }
  cards.set(item.id, entry)
  paint(entry, item)
  return li
}

function paint (entry, item) {
  const { li } = entry
  const before = entry.item
  entry.item = item
  const title = titleOf(item)

  const link = li.querySelector('.title-link')
  link.textContent = title
  link.href = item.page
  const thumb = li.querySelector('.thumb')
  thumb.href = item.page
  const img = li.querySelector('.poster')
  if (item.poster) {
    // An <img> cannot send a header: the poster URL is signed by the server (signed playback)
    // or carries ?token=. A newer signature for the same file is not worth a new download,
    // unless the one shown did not load.
    const src = auth.withToken(item.poster)
    const current = img.getAttribute('src')
    if (current !== src && (pathOf(current) !== pathOf(src) || (img.complete && !img.naturalWidth))) img.src = src
    img.alt = t('list.poster_alt', { title })
    img.hidden = false
  } else {
    img.hidden = true
    img.removeAttribute('src')
  }
  reveal(li.querySelector('.duration-badge'), item.duration ? formatClock(item.duration) : '')
  li.querySelector('.size').textContent = item.size ? formatBytes(item.size) : ''
  const created = li.querySelector('.created')
  created.dateTime = item.created_at || ''
  created.textContent = item.created_at ? t('list.created', { when: formatDate(item.created_at) }) : ''

  const { label, detail } = paintStatus(li, item)
  reveal(li.querySelector('.error-detail'), item.state === 'failed' ? detail : '')

  const retry = li.querySelector('.retry')
  retry.hidden = item.state !== 'failed'
  retry.textContent = t('list.retry')
  retry.setAttribute('aria-label', t('list.retry_label', { title }))
  const del = li.querySelector('.delete')
  del.textContent = t('list.delete')
  del.setAttribute('aria-label', t('list.delete_label', { title }))

  if (before && before.state !== item.state) {
    announce(t('announce.state', { title, state: label, detail }))
  }
}

function pathOf (url) {
  return url ? url.split('?')[0] : url
}

function upsert (item, { prepend = false } = {}) {
  if (gone.has(item.id)) return
  const entry = cards.get(item.id)
  if (entry) {
    paint(entry, item)
    return
  }
  if (!prepend) {
    els.list.append(createCard(item))
    updateEmpty()
    return
  }
  // keep newest first: place it before the first card that is older
  const when = Date.parse(item.created_at)
  const older = [...els.list.children].find((li) => {
    const other = cards.get(li.dataset.id)
    return other && Date.parse(other.item.created_at) < when
  })
  if (!older && nextUrl) return // it belongs on a page not loaded yet
  els.list.insertBefore(createCard(item), older || null)
  updateEmpty()
}

function removeCard (id, { say = true, deleted = true } = {}) {
  if (deleted) gone.add(id)
  const entry = cards.get(id)
  if (!entry) return
  cards.delete(id)
  const next = entry.li.nextElementSibling || entry.li.previousElementSibling
  const hadFocus = entry.li.contains(document.activeElement)
  entry.li.remove()
  if (hadFocus) {
    const target = next && next.querySelector('.title-link')
    if (target) target.focus()
    else document.getElementById('main').focus()
  }
  if (say) announce(t('announce.removed', { title: titleOf(entry.item) }))
  updateEmpty()
}

function updateEmpty () {
  els.empty.hidden = cards.size > 0 || loading !== null
}

// ------------------------------------------------------------------ loading
async function loadPage (url, { replace = false } = {}) {
  if (loading) return loading
  els.list.setAttribute('aria-busy', 'true')
  loading = (async () => {
    try {
      const body = await api(url)
      if (replace) {
        const keep = new Set(body.items.map((i) => i.id))
        for (const id of [...cards.keys()]) if (!keep.has(id)) removeCard(id, { say: false, deleted: false })
      }
      for (const item of body.items) upsert(item)
      nextUrl = body.next
      els.more.hidden = !nextUrl
      reveal(els.error, '')
    } catch (err) {
      reveal(els.error, t('list.load_failed', { reason: err.message }))
    } finally {
      loading = null
      els.list.setAttribute('aria-busy', 'false')
      updateEmpty()
    }
  })()
  return loading
}

/** After a lost connection: re-read the first page; cards further down update via events. */
function resync () {
  loadPage('/api/media', { replace: cards.size <= 20 })
}

// ------------------------------------------------------------------ actions
async function retry (id) {
  const entry = cards.get(id)
  if (!entry) return
  const button = entry.li.querySelector('.retry')
  button.disabled = true
  try {
    const item = await api(`/api/media/${id}/retry`, { method: 'POST' })
    if (item) paint(entry, item)
  } catch (err) {
    announce(t('list.retry_failed', { reason: err.message }), { assertive: true })
    reveal(entry.li.querySelector('.error-detail'), t('list.retry_failed', { reason: err.message }))
  } finally {
    button.disabled = false
  }
}

let pendingDelete = null

function confirmDelete (id) {
  const entry = cards.get(id)
  if (!entry) return
  pendingDelete = id
  const title = titleOf(entry.item)
  els.dialogText.textContent = t(entry.item.state === 'uploading' ? 'delete.text_uploading' : 'delete.text', { title })
  els.dialog.returnValue = ''
  els.dialog.showModal()
  // "Keep it" first, set here rather than with autofocus: an autofocus attribute is refused
  // (with a console error) when the page is embedded in the platform's iframe
  els.dialog.querySelector('button[value="cancel"]').focus()
}

async function onDialogClose () {
  // A close event is queued as a task: when the dialog was closed and at once opened again
  // (Escape, then Enter on the same button), the first close arrives while the second dialog is
  // open and must not consume the id that dialog is asking about.
  if (els.dialog.open) return
  const id = pendingDelete
  pendingDelete = null
  const entry = id && cards.get(id)
  if (!entry) return
  if (els.dialog.returnValue !== 'confirm') {
    entry.li.querySelector('.delete').focus()
    return
  }
  const title = titleOf(entry.item)
  try {
    if (entry.item.state === 'uploading') {
      // An unfinished upload is stopped the tus way, which also frees its lock.
      const response = await authFetch(`${window.location.origin}${uploadPath(id)}`, {
        method: 'DELETE', headers: { 'Tus-Resumable': '1.0.0' }
      })
      if (!response.ok && response.status !== 404) {
        throw new ApiError(response.status, response.status === 401 ? sessionMessage() : String(response.status))
      }
    } else {
      await api(`/api/media/${id}`, { method: 'DELETE' })
    }
    removeCard(id, { say: false })
    announce(t('list.deleted', { title }))
  } catch (err) {
    if (err.status === 404) {
      removeCard(id, { say: false })
      return
    }
    announce(t('list.delete_failed', { reason: err.message }), { assertive: true })
    reveal(entry.li.querySelector('.error-detail'), t('list.delete_failed', { reason: err.message }))
  }
}

function uploadPath (id) {
  return config.endpoint.replace(/\/?$/, '/') + id
}

// ------------------------------------------------------------------ start
function showFlash () {
  const params = new URLSearchParams(window.location.search)
  const uploaded = params.get('uploaded')
  if (!uploaded) return
  const show = (title) => {
    reveal(els.flash, title ? t('list.uploaded_flash', { title }) : t('list.uploaded_flash_generic'))
    announce(els.flash.textContent)
  }
  const entry = cards.get(uploaded)
  show(entry ? titleOf(entry.item) : '')
  // the address should not re-show the message on reload
  window.history.replaceState(null, '', window.location.pathname)
}

async function main () {
  els.dialog.addEventListener('close', onDialogClose)
  els.more.addEventListener('click', () => { if (nextUrl) loadPage(nextUrl) })
  subscribe({
    onItem: (item) => upsert(item, { prepend: true }),
    onDelete: (id) => removeCard(id),
    onResync: resync,
    onConnection: (up) => reveal(els.connection, up ? '' : t('list.live_lost'))
  })
  await loadPage('/api/media')
  showFlash()
  // let a stalled upload read as stalled even when no event arrives
  window.setInterval(() => {
    for (const entry of cards.values()) {
      if (entry.item.state === 'uploading') {
        const { detail } = describe(entry.item)
        entry.li.querySelector('.status-detail').textContent = detail
      }
    }
  }, 15000)
}

main()
