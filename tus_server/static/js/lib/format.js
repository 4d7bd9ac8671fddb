// Numbers, sizes, durations and dates as a person reads them, in the page's language. Pure:
// the language and the UI strings come in as arguments (common.js binds them to the page), so
// Node's test runner can check the rounding and the edge cases (tests/js/format.test.mjs).

/** The UI string for `key` from `strings` with `{name}` placeholders filled from `vars`. */
export function translate (strings, key, vars = {}) {
  const text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key
  return text.replace(/\{(\w+)\}/g, (match, name) => (name in vars ? String(vars[name]) : match))
}

/** Seconds → "1:02:03" or "2:03", as players show positions; nonsense reads as 0:00. */
export function formatClock (seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) seconds = 0
  const s = Math.floor(seconds % 60)
  const m = Math.floor(seconds / 60) % 60
  const h = Math.floor(seconds / 3600)
  const pad = (n) => String(n).padStart(2, '0')
  return h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`
}

const BYTE_UNITS = ['kilobyte', 'megabyte', 'gigabyte', 'terabyte']

/** One decimal, rounded half up like Intl does: the unit is chosen on the value shown. */
const shown1 = (value) => Math.round(value * 10) / 10

/**
 * The formatters of one page: `lang` for Intl, `t(key, vars)` for the strings that carry
 * units in words (durations, bitrates).
 */
export function createFormat (lang, t) {
  const number1 = new Intl.NumberFormat(lang, { maximumFractionDigits: 1 })
  const number0 = new Intl.NumberFormat(lang, { maximumFractionDigits: 0 })
  const byteFormats = BYTE_UNITS.map((unit) => new Intl.NumberFormat(lang, {
    style: 'unit', unit, unitDisplay: 'short', maximumFractionDigits: 1
  }))
  const dateFormat = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' })

  /** 67108864 → "67.1 MB" (decimal units, like operating systems show file sizes; from kB up). */
  function formatBytes (bytes) {
    if (bytes == null || !Number.isFinite(bytes)) return ''
    let value = Math.max(0, bytes) / 1000
    let unit = 0
    // 999 950 bytes would otherwise read "1,000 kB"
    while (shown1(value) >= 1000 && unit < BYTE_UNITS.length - 1) {
      value /= 1000
      unit += 1
    }
    return byteFormats[unit].format(value)
  }

  /**
   * 0..100 → "42" / "4.2": rounded down, so an upload reads 100 only when it is complete;
   * one decimal below 10 so a slow start still shows movement.
   */
  function formatPercent (value) {
    if (!Number.isFinite(value) || value <= 0) return number0.format(0)
    if (value >= 10) return number0.format(Math.floor(value))
    return number1.format(Math.floor(value * 10) / 10)
  }

  /** Seconds → "3 min 20 s" for durations a person waits through (rounded up). */
  function formatWait (seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return ''
    seconds = Math.ceil(seconds)
    if (seconds >= 3600) {
      return t('time.hours_minutes', { h: Math.floor(seconds / 3600), m: Math.floor((seconds % 3600) / 60) })
    }
    if (seconds >= 60) return t('time.minutes_seconds', { m: Math.floor(seconds / 60), s: seconds % 60 })
    return t('time.seconds', { s: seconds })
  }

  /** 2 500 000 → "2.5 Mbit/s", 800 000 → "800 kbit/s"; '' for an unknown rate. */
  function formatBitrate (bitsPerSecond) {
    if (!Number.isFinite(bitsPerSecond) || bitsPerSecond <= 0) return ''
    if (Math.round(bitsPerSecond / 1e3) >= 1000) return t('bitrate.mbps', { value: number1.format(bitsPerSecond / 1e6) })
    return t('bitrate.kbps', { value: number0.format(bitsPerSecond / 1e3) })
  }

  /** An ISO timestamp from the API → "Mar 3, 2025, 2:05 PM"; '' when missing or unreadable. */
  function formatDate (iso) {
    if (!iso) return ''
    const date = new Date(iso)
    return Number.isNaN(date.getTime()) ? '' : dateFormat.format(date)
  }

  return { formatBytes, formatPercent, formatClock, formatWait, formatBitrate, formatDate }
}
