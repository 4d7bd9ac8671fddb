// Formatting in the page's language: lib/format.js with the shipped English strings.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'

import { createFormat, formatClock, translate } from '../../tus_server/static/js/lib/format.js'

process.env.TZ = 'UTC' // before the formatters are made: dates below read the same on every machine
const en = JSON.parse(readFileSync(new URL('../../tus_server/i18n/en.json', import.meta.url), 'utf8'))
const t = (key, vars) => translate(en, key, vars)
const f = createFormat('en', t)

test('translate fills placeholders and leaves unknown ones and keys as they are', () => {
  const strings = { greet: 'Hello {name}, {count} new', plain: 'no vars' }
  assert.equal(translate(strings, 'greet', { name: 'Ada', count: 0 }), 'Hello Ada, 0 new')
  assert.equal(translate(strings, 'greet', { name: 'Ada' }), 'Hello Ada, {count} new')
  assert.equal(translate(strings, 'missing.key'), 'missing.key')
  assert.equal(translate(strings, 'plain', { name: 'x' }), 'no vars')
  // inherited names are not strings of the catalog
  assert.equal(translate(strings, 'constructor'), 'constructor')
  assert.equal(translate(strings, 'toString'), 'toString')
})

test('formatBytes: decimal units from kB, one decimal', () => {
  assert.equal(f.formatBytes(0), '0 kB')
  assert.equal(f.formatBytes(1), '0 kB')
  assert.equal(f.formatBytes(1500), '1.5 kB')
  assert.equal(f.formatBytes(67108864), '67.1 MB')
  assert.equal(f.formatBytes(40 * 1000 * 1000), '40 MB')
  assert.equal(f.formatBytes(5.5e9), '5.5 GB')
})

test('formatBytes chooses the unit on the rounded value (no "1,000 kB")', () => {
  assert.equal(f.formatBytes(999_949), '999.9 kB')
  assert.equal(f.formatBytes(999_950), '1 MB')
  assert.equal(f.formatBytes(999_950_000), '1 GB')
})

test('formatBytes: huge values stay in TB; nonsense reads as nothing or zero', () => {
  assert.equal(f.formatBytes(1e18), '1,000,000 TB')
  assert.equal(f.formatBytes(Number.MAX_SAFE_INTEGER), '9,007.2 TB')
  assert.equal(f.formatBytes(-5000), '0 kB')
  for (const bad of [NaN, Infinity, -Infinity, null, undefined]) assert.equal(f.formatBytes(bad), '', String(bad))
})

test('formatBytes follows the page language', () => {
  assert.equal(createFormat('de', t).formatBytes(67108864), '67,1 MB')
})

test('formatPercent rounds down, so 100 only when complete', () => {
  assert.equal(f.formatPercent(0), '0')
  assert.equal(f.formatPercent(0.05), '0')
  assert.equal(f.formatPercent(0.15), '0.1')
  assert.equal(f.formatPercent(9.99), '9.9')
  assert.equal(f.formatPercent(10), '10')
  assert.equal(f.formatPercent(42.7), '42')
  assert.equal(f.formatPercent(99.99), '99')
  assert.equal(f.formatPercent(100), '100')
  for (const bad of [NaN, -3, -Infinity, undefined]) assert.equal(f.formatPercent(bad), '0', String(bad))
})

test('formatClock: player positions', () => {
  assert.equal(formatClock(0), '0:00')
  assert.equal(formatClock(59.99), '0:59')
  assert.equal(formatClock(60), '1:00')
  assert.equal(formatClock(3599), '59:59')
  assert.equal(formatClock(3723.4), '1:02:03')
  assert.equal(formatClock(360000), '100:00:00')
  for (const bad of [NaN, -1, Infinity, undefined]) assert.equal(formatClock(bad), '0:00', String(bad))
  assert.equal(f.formatClock, formatClock)
})

test('formatWait rounds up and switches units at a minute and an hour', () => {
  assert.equal(f.formatWait(0), '0 s')
  assert.equal(f.formatWait(0.2), '1 s')
  assert.equal(f.formatWait(59), '59 s')
  assert.equal(f.formatWait(59.2), '1 min 0 s')
  assert.equal(f.formatWait(200), '3 min 20 s')
  assert.equal(f.formatWait(3599.5), '1 h 0 min')
  assert.equal(f.formatWait(3661), '1 h 1 min')
  assert.equal(f.formatWait(100 * 3600 + 59 * 60 + 59), '100 h 59 min')
  for (const bad of [NaN, -1, Infinity, undefined]) assert.equal(f.formatWait(bad), '', String(bad))
})

test('formatBitrate: kbit/s below a megabit, Mbit/s from the rounded megabit', () => {
  assert.equal(f.formatBitrate(800_000), '800 kbit/s')
  assert.equal(f.formatBitrate(1499), '1 kbit/s')
  assert.equal(f.formatBitrate(999_499), '999 kbit/s')
  assert.equal(f.formatBitrate(999_999), '1 Mbit/s')
  assert.equal(f.formatBitrate(2_500_000), '2.5 Mbit/s')
  for (const bad of [0, -1, NaN, Infinity, null, undefined]) assert.equal(f.formatBitrate(bad), '', String(bad))
})

test('formatDate: readable date, nothing for missing or unreadable input', () => {
  const text = f.formatDate('2025-03-03T14:05:00Z')
  assert.match(text, /^Mar 3, 2025, 2:05\s?PM$/)
  assert.equal(f.formatDate(''), '')
  assert.equal(f.formatDate(null), '')
  assert.equal(f.formatDate('not a date'), '')
})
