// The upload page: choose a video, give it a title, Publish. tus-js-client does the transfer in
// chunks of the configured size, retries with backoff after network errors and remembers the
// upload in localStorage (its default fingerprint), so choosing the same file after a reload
// or a browser restart continues where it stopped.
//
// With auth on, every tus request carries the page's token (auth.js), read again before each
// request so a refreshed token is used at once. A 401 stops the upload without losing it: the
// server refused before reading a byte, so its offset is where it was; the page says the
// session expired, and Retry, or a fresh token pushed by the platform, continues from there.
//
// Choosing a file starts a look-up of an earlier upload of it (localStorage, then the server).
// Publish pressed while that look-up runs waits for it, showing "checking…", so a reload,
// the same file chosen again and Publish pressed at once continue the earlier upload instead
// of sending the whole file again.

import * as auth from './auth.js'
import { announce, api, config, formatBytes, formatDate, formatPercent, formatWait, reveal, sessionMessage, t } from './common.js'
import { ProgressMeter } from './lib/meter.js'

const $ = (id) => document.getElementById(id)
const els = {
  form: $('upload-form'),
  dropzone: $('dropzone'),
  file: $('file'),
  fileInfo: $('file-info'),
  title: $('title'),
  description: $('description'),
  formError: $('form-error'),
  publish: $('publish'),
  resumeOffer: $('resume-offer'),
  resumeText: $('resume-text'),
  resumeContinue: $('resume-continue'),
  unfinished: $('unfinished'),
  unfinishedList: $('unfinished-list'),
  panel: $('progress-panel'),
  heading: $('progress-heading'),
  bar: $('progress'),
  bytes: $('progress-bytes'),
  percent: $('progress-percent'),
  speed: $('progress-speed'),
  eta: $('progress-eta'),
  state: $('progress-state'),
  pause: $('pause'),
  resume: $('resume'),
  cancel: $('cancel'),
  error: $('upload-error'),
  errorText: $('upload-error-text'),
  retry: $('retry'),
  chooseAnother: $('choose-another'),
  done: $('upload-done'),
  doneText: $('upload-done-text')
}

// The longest Publish waits for the look-up: it takes a few hundred ms; a server that does not
// answer must not keep Publish from working at all.
const LOOKUP_WAIT_MS = 5000
const VIDEO_EXTENSIONS = /\.(mp4|m4v|mov|mkv|webm|avi|mts|m2ts|ts|flv|3gp|wmv|mpg|mpeg|ogv)$/i
const tus = window.tus

const session = {
  file: null,
  upload: null,
  previous: null, // a PreviousUpload of tus-js-client for the chosen file, if any
  previousPercent: '',
  lookup: null, // the running look-up of an earlier upload of the chosen file (a promise)
  starting: false, // Publish was pressed and waits for the look-up
  state: 'idle', // idle | uploading | paused | error | done
  meter: new ProgressMeter(), // speed, time left, when to repaint, 25 % announcements
  mediaId: null,
  refused: false // the upload stopped because the server refused the token (401)
}

function uploadIdOf (url) {
  const match = /\/([0-9a-f]{32})\/?$/.exec(url || '')
  return match ? match[1] : null
}

// ------------------------------------------------------------------ choosing a file
function isProbablyVideo (file) {
  return (file.type && file.type.startsWith('video/')) || VIDEO_EXTENSIONS.test(file.name)
}

function titleFromName (name) {
  return name.replace(/\.[^.]+$/, '').replace(/[_-]+/g, ' ').trim()
}

async function chooseFile (file) {
  if (!file) return
  session.file = file
  session.previous = null
  els.resumeOffer.hidden = true
  els.dropzone.classList.add('has-file')
  let info = t('upload.file_info', { name: file.name, size: formatBytes(file.size) })
  if (!isProbablyVideo(file)) info += ' — ' + t('upload.not_video', { name: file.name })
  reveal(els.fileInfo, info)
  reveal(els.formError, '')
  if (!els.title.value.trim()) els.title.value = titleFromName(file.name).slice(0, 300)
  announce(info)
  if (!tus) return
  const lookup = offerResume(file).catch((err) => console.warn('could not look for previous uploads', err))
  session.lookup = lookup
  try {
    await lookup
  } finally {
    if (session.lookup === lookup) session.lookup = null
  }
}

/** Publish pressed during the look-up: wait for it (bounded), visibly, then go on. */
async function waitForLookup () {
  const lookup = session.lookup
  if (!lookup) return
  const label = els.publish.textContent
  session.starting = true
  els.publish.disabled = true
  els.publish.setAttribute('aria-busy', 'true')
  els.publish.textContent = t('upload.checking')
  announce(t('upload.checking'))
  let timer = null
  try {
    await Promise.race([lookup, new Promise((resolve) => { timer = window.setTimeout(resolve, LOOKUP_WAIT_MS) })])
  } finally {
    window.clearTimeout(timer)
    els.publish.textContent = label
    els.publish.disabled = false
    els.publish.removeAttribute('aria-busy')
    session.starting = false
  }
}

async function offerResume (file) {
  let found = []
  try {
    found = await new tus.Upload(file, uploadOptions(file)).findPreviousUploads()
  } catch (err) {
    console.warn('could not look for previous uploads', err)
    return
  }
  if (!found.length) return
  const byId = new Map(found.map((p) => [uploadIdOf(p.uploadUrl), p]).filter(([id]) => id))
  const server = await serverItems([...byId.keys()])
  let best = null
  for (const [id, previous] of byId) {
    const item = server.get(id)
    if (!item || item.state !== 'uploading') {
      forget(previous)
      continue
    }
    if (!best || new Date(previous.creationTime) > new Date(best.previous.creationTime)) best = { previous, item }
  }
  if (!best || session.file !== file) return
  session.previous = best.previous
  session.previousPercent = formatPercent(best.item.progress)
  const meta = best.previous.metadata || {}
  if (meta.title && (!els.title.value.trim() || els.title.value === titleFromName(file.name))) els.title.value = meta.title
  if (meta.description && !els.description.value.trim()) els.description.value = meta.description
  els.resumeContinue.checked = true
  reveal(els.resumeText, t('resume.found', {
    percent: formatPercent(best.item.progress),
    when: formatDate(best.previous.creationTime)
  }))
  els.resumeOffer.hidden = false
  announce(els.resumeText.textContent)
}

async function serverItems (ids) {
  const result = new Map()
  if (!ids.length) return result
  try {
    const body = await api(`/api/media?ids=${ids.slice(0, 100).join(',')}`)
    for (const item of body.items) result.set(item.id, item)
  } catch (err) {
    console.warn('could not check unfinished uploads', err)
  }
  return result
}

function forget (previous) {
  if (previous && previous.urlStorageKey && tus.defaultOptions.urlStorage) {
    tus.defaultOptions.urlStorage.removeUpload(previous.urlStorageKey).catch(() => {})
  }
}

/** Unfinished uploads this browser remembers; each can be continued by choosing its file. */
async function listUnfinished () {
  const storage = tus && tus.defaultOptions && tus.defaultOptions.urlStorage
  if (!storage || !storage.findAllUploads) return
  let stored = []
  try {
    stored = await storage.findAllUploads()
  } catch (_err) {
    return
  }
  const entries = stored.map((p) => ({ previous: p, id: uploadIdOf(p.uploadUrl) })).filter((e) => e.id)
  const server = await serverItems(entries.map((e) => e.id))
  els.unfinishedList.replaceChildren()
  let shown = 0
  for (const { previous, id } of entries) {
    const item = server.get(id)
    if (!item || item.state !== 'uploading') {
      if (server.size || !entries.length) forget(previous)
      continue
    }
    const title = (previous.metadata && (previous.metadata.title || previous.metadata.filename)) || item.title
    const li = document.createElement('li')
    li.dataset.id = id
    const text = document.createElement('span')
    text.textContent = t('resume.item', {
      title,
      done: formatBytes(item.upload.offset),
      total: formatBytes(item.upload.length),
      percent: formatPercent(item.progress),
      when: formatDate(previous.creationTime)
    })
    const button = document.createElement('button')
    button.type = 'button'
    button.className = 'quiet'
    button.textContent = t('resume.forget')
    button.setAttribute('aria-label', t('resume.forget_label', { title }))
    button.addEventListener('click', async () => {
      button.disabled = true
      try { await tus.Upload.terminate(previous.uploadUrl, auth.tusOptions()) } catch (_err) { /* already gone */ }
      forget(previous)
      li.remove()
      if (!els.unfinishedList.children.length) els.unfinished.hidden = true
    })
    li.append(text, button)
    els.unfinishedList.append(li)
    shown += 1
  }
  els.unfinished.hidden = shown === 0
}

// ------------------------------------------------------------------ uploading
function uploadOptions (file) {
  const metadata = { filename: file.name, filetype: file.type || 'application/octet-stream' }
  const title = els.title.value.trim()
  const description = els.description.value.trim()
  if (title) metadata.title = title
  if (description) metadata.description = description
  return {
    ...auth.tusOptions(),
    endpoint: config.endpoint,
    chunkSize: config.chunkSize || Infinity,
    retryDelays: config.retryDelays,
    metadata,
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    onProgress: onProgress,
    onSuccess: onSuccess,
    onError: onError,
    onShouldRetry: shouldRetry,
    onAfterResponse: (_req, res) => {
      const link = res.getHeader('Link') || res.getHeader('link')
      const match = link && /<\/api\/media\/([0-9a-f]{32})>/.exec(link)
      if (match) session.mediaId = match[1]
    }
  }
}

function shouldRetry (err, attempt) {
  const status = err.originalResponse ? err.originalResponse.getStatus() : 0
  if (status === 401) {
    // true only when a fresher token arrived while this request was out: send it at once
    session.refused = !auth.refused(auth.sentWith(err.originalRequest))
    return !session.refused
  }
  // A refusal will not change by asking again; conflicts, locks and rate limits might.
  if (status >= 400 && status < 500 && ![409, 423, 429].includes(status)) return false
  paintState(t('progress.retrying'))
  return true
}

async function startUpload (event) {
  event.preventDefault()
  if (session.starting) return
  if (!tus || !tus.isSupported) {
    reveal(els.formError, tus ? t('upload.unsupported') : t('upload.no_tus'))
    return
  }
  if (!session.file) {
    reveal(els.formError, t('upload.need_file'))
    els.file.focus()
    return
  }
  await waitForLookup() // it may find an earlier upload to continue (and its title)
  if (session.state === 'uploading') return
  if (!els.title.value.trim()) {
    reveal(els.formError, t('upload.need_title'))
    els.title.focus()
    return
  }
  const file = session.file
  // Feedback first, before any byte moves: the panel and an empty bar.
  showPanel(file)
  const upload = new tus.Upload(file, uploadOptions(file))
  session.upload = upload
  const previous = session.previous
  if (previous && els.resumeContinue.checked) {
    upload.resumeFromPreviousUpload(previous)
    paintState(t('resume.continuing', { percent: session.previousPercent }))
  } else if (previous) {
    tus.Upload.terminate(previous.uploadUrl, auth.tusOptions()).catch(() => {})
    forget(previous)
  }
  session.previous = null
  session.refused = false
  setState('uploading')
  upload.start()
}

function showPanel (file) {
  els.form.hidden = true
  els.unfinished.hidden = true
  els.error.hidden = true
  els.panel.hidden = false
  els.heading.textContent = t('progress.heading', { title: els.title.value.trim() })
  els.bar.max = Math.max(1, file.size)
  els.bar.value = 0
  els.bytes.textContent = t('progress.bytes', { done: formatBytes(0), total: formatBytes(file.size) })
  els.percent.textContent = t('progress.percent', { percent: formatPercent(0) })
  els.speed.textContent = t('progress.speed_unknown')
  els.eta.textContent = t('progress.eta_unknown')
  paintState(t('progress.starting'))
  session.meter.reset()
  els.pause.focus()
}

function onProgress (sent, total) {
  els.bar.max = Math.max(1, total)
  els.bar.value = sent
  const readout = session.meter.update(sent, total, performance.now())
  if (!readout) return
  const { percent, speed, secondsLeft, milestone } = readout
  els.bytes.textContent = t('progress.bytes', { done: formatBytes(sent), total: formatBytes(total) })
  els.percent.textContent = t('progress.percent', { percent: formatPercent(percent) })
  els.speed.textContent = speed ? t('progress.speed', { speed: formatBytes(speed) }) : t('progress.speed_unknown')
  els.eta.textContent = speed ? t('progress.eta', { time: formatWait(secondsLeft) }) : t('progress.eta_unknown')
  if (session.state === 'uploading' && els.state.textContent !== '') paintState('')
  if (milestone) announce(t('progress.announce_25', { percent: milestone }))
}

function onSuccess () {
  setState('done')
  const upload = session.upload
  const id = session.mediaId || uploadIdOf(upload && upload.url)
  const title = els.title.value.trim()
  els.bar.value = els.bar.max
  els.percent.textContent = t('progress.percent', { percent: 100 })
  els.eta.textContent = ''
  els.speed.textContent = ''
  els.pause.hidden = els.resume.hidden = els.cancel.hidden = true
  reveal(els.doneText, t('progress.done', { title }))
  els.done.hidden = false
  announce(els.doneText.textContent)
  const target = id ? `/media?uploaded=${encodeURIComponent(id)}` : '/media?uploaded=1'
  window.setTimeout(() => window.location.assign(target), config.redirectDelayMs ?? 400)
}

function onError (err) {
  const res = err && err.originalResponse
  if (res && res.getStatus() === 401 && !session.refused) {
    // refused after the retries were used up, so shouldRetry did not see it
    auth.refused(auth.sentWith(err.originalRequest))
    session.refused = true
  }
  setState('error')
  paintState('')
  els.speed.textContent = ''
  els.eta.textContent = ''
  // refused before any byte was stored: the bar has nothing to say
  if (!session.upload || !session.upload.url) els.panel.hidden = true
  els.error.hidden = false
  reveal(els.errorText, errorMessage(err))
  announce(els.errorText.textContent, { assertive: true })
  els.retry.focus()
}

function errorMessage (err) {
  const res = err && err.originalResponse
  const status = res ? res.getStatus() : 0
  if (status === 413) {
    const max = Number(res.getHeader('Tus-Max-Size')) || config.maxSize
    return max ? t('error.too_large', { max: formatBytes(max) }) : t('error.too_large_unknown')
  }
  if (status === 415) return t('error.unsupported_type')
  if (status === 401) return sessionMessage()
  if (!status) return t('error.network')
  const reason = ((res.getBody && res.getBody()) || '').split('\n')[0].trim() || String(status)
  return t('error.server', { status, reason })
}

function setState (state) {
  session.state = state
  const active = state === 'uploading' || state === 'paused'
  els.pause.hidden = state !== 'uploading'
  els.resume.hidden = state !== 'paused'
  els.cancel.hidden = !active && state !== 'error'
  if (state !== 'error') els.error.hidden = true
}

function paintState (text) {
  els.state.textContent = text
}

function pause () {
  if (!session.upload || session.state !== 'uploading') return
  session.upload.abort()
  setState('paused')
  paintState(t('progress.paused'))
  els.speed.textContent = ''
  els.eta.textContent = ''
  els.resume.focus()
}

function resume () {
  if (!session.upload) return
  session.refused = false
  els.panel.hidden = false
  setState('uploading')
  paintState(t('progress.starting'))
  session.meter.resume()
  session.upload.start()
  els.pause.focus()
}

async function cancel () {
  if (!session.upload) return
  if (!window.confirm(t('progress.cancel_confirm'))) return
  const upload = session.upload
  session.upload = null
  setState('idle')
  try { await upload.abort(true) } catch (_err) { /* nothing left to remove */ }
  resetToForm()
  announce(t('progress.cancelled'))
}

function resetToForm () {
  els.panel.hidden = true
  els.error.hidden = true
  els.form.hidden = false
  els.resumeOffer.hidden = true
  els.publish.focus()
}

// ------------------------------------------------------------------ wiring
function wire () {
  els.file.addEventListener('change', () => chooseFile(els.file.files[0]))
  els.form.addEventListener('submit', startUpload)
  els.pause.addEventListener('click', pause)
  els.resume.addEventListener('click', resume)
  els.cancel.addEventListener('click', cancel)
  els.retry.addEventListener('click', resume)
  els.chooseAnother.addEventListener('click', () => {
    if (session.upload) session.upload.abort()
    session.upload = null
    setState('idle')
    resetToForm()
    els.file.value = ''
    els.file.focus()
  })

  const zone = els.dropzone
  const over = (event) => {
    event.preventDefault()
    zone.classList.add('dragging')
  }
  zone.addEventListener('dragenter', over)
  zone.addEventListener('dragover', over)
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'))
  zone.addEventListener('drop', (event) => {
    event.preventDefault()
    zone.classList.remove('dragging')
    const file = event.dataTransfer && event.dataTransfer.files[0]
    if (file) chooseFile(file)
  })
  // A file dropped beside the zone must not make the browser leave the page.
  window.addEventListener('dragover', (event) => event.preventDefault())
  window.addEventListener('drop', (event) => event.preventDefault())

  window.addEventListener('beforeunload', (event) => {
    if (session.state === 'uploading') {
      event.preventDefault()
      event.returnValue = t('progress.leave_warning')
    }
  })
}

wire()
// The platform handed over a fresh token (tusflow:token): an upload the old one stopped goes on.
auth.subscribe((event) => {
  if (event.type === 'token' && session.refused && session.state === 'error') resume()
})
if (auth.enabled()) {
  // Say at once when the page's token is missing or refused, not after a file was chosen.
  api('/api/uploads/mine').catch(() => {})
}
if (!tus) {
  reveal(els.formError, t('upload.no_tus'))
  els.publish.disabled = true
} else {
  listUnfinished()
  // the browser may keep a chosen file across a reload
  if (els.file.files && els.file.files[0]) chooseFile(els.file.files[0])
}
