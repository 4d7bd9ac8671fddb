// How a video's state reads to a person: one badge, one line of detail, an optional progress
// value. Shared by the list and the player so both say the same thing.

import { formatPercent, formatWait, t } from './common.js'

const STALLED_AFTER_MS = 60_000

function readyCount (item) {
  return (item.renditions || []).filter((r) => !r.state || r.state === 'ready').length
}

/** The renditions a player can pick now (every one, for rows written before states). */
export function readyRenditions (item) {
  return (item.renditions || []).filter((r) => !r.state || r.state === 'ready')
}

export function renditionNames (item) {
  return readyRenditions(item)
    .slice()
    .sort((a, b) => (b.height || 0) - (a.height || 0))
    .map((r) => r.name || `${r.height}p`)
    .join(' · ')
}

/** { label, detail, progress } where progress is 0..100 or null when no bar should show. */
export function describe (item, now = Date.now()) {
  const percent = formatPercent(item.progress || 0)
  switch (item.state) {
    case 'uploading': {
      const updated = Date.parse(item.upload && item.upload.updated_at)
      const stalled = Number.isFinite(updated) && now - updated > STALLED_AFTER_MS
      return {
        label: t('state.uploading'),
        detail: t(stalled ? 'status.upload_stalled' : 'status.uploading', { percent }),
        progress: item.progress || 0
      }
    }
    case 'queued':
      return {
        label: t('state.queued'),
        detail: item.queue_position ? t('status.queued_position', { position: item.queue_position }) : t('status.queued'),
        progress: null
      }
    case 'processing':
      return {
        label: t('state.processing'),
        detail: item.eta_seconds != null && item.eta_seconds >= 0
          ? t('status.processing_eta', { percent, eta: formatWait(item.eta_seconds) })
          : t('status.processing', { percent }),
        progress: item.progress || 0
      }
    case 'playable': {
      // Watchable now; the rest of the ladder is still being made ("2 of 5 versions").
      const versions = item.versions || { ready: readyCount(item), total: (item.renditions || []).length }
      return {
        label: t('state.playable'),
        detail: t('status.playable', { ready: versions.ready, total: versions.total }),
        progress: item.progress || 0
      }
    }
    case 'ready': {
      const names = renditionNames(item)
      return {
        label: t('state.ready'),
        detail: names ? t('status.ready', { renditions: names }) : t('status.ready_plain'),
        progress: null
      }
    }
    case 'failed':
      return {
        label: t('state.failed'),
        detail: item.error ? t('status.failed', { reason: item.error }) : t('status.failed_unknown'),
        progress: null
      }
    default:
      return { label: item.state || '', detail: '', progress: null }
  }
}

/** Fill `.badge`, `.status-detail` and `.item-progress` inside `root` for `item`. */
export function paintStatus (root, item) {
  const { label, detail, progress } = describe(item)
  root.dataset.state = item.state
  root.querySelector('.badge').textContent = label
  root.querySelector('.status-detail').textContent = item.state === 'failed' ? '' : detail
  const bar = root.querySelector('.item-progress')
  if (bar) {
    bar.hidden = progress === null
    if (progress !== null) {
      bar.value = Math.min(100, Math.max(0, progress))
      bar.setAttribute('aria-label', `${label}: ${detail}`)
    }
  }
  return { label, detail }
}
