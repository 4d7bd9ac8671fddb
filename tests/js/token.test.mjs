// The credential hand-off (lib/token.js): a token in the address, the cookie, sessionStorage,
// postMessage from the platform, ?token= on self-loading links, and what a 401 leads to.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  Credential, STORAGE_KEY, bearerToken, readCookie, takeHandover, tokenFromMessage, tokenStore, withTokenParam
} from '../../tus_server/static/js/lib/token.js'

const PAGE = 'https://tusflow.example'
const PLATFORM = 'https://lms.example'

test('a token in the fragment is taken and the address keeps only the rest', () => {
  assert.deepEqual(takeHandover(`${PAGE}/#token=eyJ.abc.def`), { token: 'eyJ.abc.def', address: '/' })
  assert.deepEqual(takeHandover(`${PAGE}/media/${'a'.repeat(32)}#t=10&token=eyJ.x.y&lang=de`),
    { token: 'eyJ.x.y', address: `/media/${'a'.repeat(32)}#t=10&lang=de` })
  assert.deepEqual(takeHandover(`${PAGE}/media?uploaded=1#token=tok`), { token: 'tok', address: '/media?uploaded=1' })
})

test('a token in the query is taken too; the fragment wins when both are there', () => {
  assert.deepEqual(takeHandover(`${PAGE}/?token=q&uploaded=1`), { token: 'q', address: '/?uploaded=1' })
  assert.deepEqual(takeHandover(`${PAGE}/?token=q#token=f`), { token: 'f', address: '/' })
})

test('a percent-encoded token is decoded; an empty one still cleans the address', () => {
  assert.equal(takeHandover(`${PAGE}/#token=a%2Eb%3D`).token, 'a.b=')
  assert.deepEqual(takeHandover(`${PAGE}/media#token=`), { token: '', address: '/media' })
})

test('no token parameter: nothing is taken and the address is left alone', () => {
  assert.equal(takeHandover(`${PAGE}/`), null)
  assert.equal(takeHandover(`${PAGE}/media?uploaded=1#main`), null)
  assert.equal(takeHandover(`${PAGE}/#tokens=x&my_token=y`), null)
})

test('readCookie finds the named cookie only', () => {
  const cookies = 'theme=dark; tusflow_token2=nope; tusflow_token=a%20b=c; last=1'
  assert.equal(readCookie(cookies, 'tusflow_token'), 'a b=c')
  assert.equal(readCookie(cookies, 'absent'), '')
  assert.equal(readCookie('', 'tusflow_token'), '')
  assert.equal(readCookie(cookies, ''), '')
  assert.equal(readCookie('t=%E0%A4%A', 't'), '%E0%A4%A') // not decodable: taken as it is
})

function fakeStorage () {
  const items = new Map()
  return {
    items,
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, String(value)),
    removeItem: (key) => items.delete(key)
  }
}

test('tokenStore keeps the token in sessionStorage under its key', () => {
  const storage = fakeStorage()
  const store = tokenStore(() => storage)
  assert.equal(store.get(), '')
  store.set('abc')
  assert.deepEqual([...storage.items], [[STORAGE_KEY, 'abc']])
  assert.equal(tokenStore(() => storage).get(), 'abc') // the next page of the same tab
  store.set('')
  assert.equal(storage.items.size, 0)
  assert.equal(store.get(), '')
})

test('tokenStore falls back to memory when storage is unavailable', () => {
  const store = tokenStore(() => { throw new Error('SecurityError: storage disabled') })
  assert.equal(store.get(), '')
  store.set('abc')
  assert.equal(store.get(), 'abc')
  store.set('')
  assert.equal(store.get(), '')
})

const parent = { name: 'parent' }
const opener = { name: 'opener' }
const where = { ownOrigin: PAGE, hosts: [PLATFORM], parent, opener: null }
const message = (over = {}) => ({ origin: PLATFORM, source: parent, data: { type: 'tusflow:token', token: 'fresh' }, ...over })

test('a token message from the platform parent, the opener or the page\'s own origin is taken', () => {
  assert.equal(tokenFromMessage(message(), where), 'fresh')
  assert.equal(tokenFromMessage(message({ origin: PAGE }), where), 'fresh')
  assert.equal(tokenFromMessage(message({ source: opener }), { ...where, parent: null, opener }), 'fresh')
})

test('a token message from another origin is ignored', () => {
  for (const origin of ['https://evil.example', 'http://lms.example', 'https://lms.example:8443', 'https://lms.example.evil.example', 'null', '']) {
    assert.equal(tokenFromMessage(message({ origin }), where), '', origin)
  }
  assert.equal(tokenFromMessage(message(), { ...where, hosts: [] }), '')
})

test('a token message from a window that is neither parent nor opener is ignored', () => {
  assert.equal(tokenFromMessage(message({ source: { name: 'sibling frame' } }), where), '')
  // no opener and no sender: null must not count as "the opener"
  assert.equal(tokenFromMessage(message({ source: null }), { ...where, parent: {} }), '')
})

test('messages of another shape are ignored', () => {
  for (const data of [null, 'tusflow:token', { type: 'tusflow:token-needed', token: 'x' }, { type: 'tusflow:token' },
    { type: 'tusflow:token', token: '' }, { type: 'tusflow:token', token: 42 }]) {
    assert.equal(tokenFromMessage(message({ data }), where), '', JSON.stringify(data))
  }
  assert.equal(tokenFromMessage(null, where), '')
})

test('withTokenParam adds ?token= to same-origin links only, never to signed ones', () => {
  assert.equal(withTokenParam('/api/events?ids=a,b', 'T', `${PAGE}/media`), '/api/events?ids=a%2Cb&token=T')
  assert.equal(withTokenParam(`${PAGE}/media/x/poster.jpg#top`, 'T', `${PAGE}/`), '/media/x/poster.jpg?token=T#top')
  assert.equal(withTokenParam('poster.jpg', 'a b', `${PAGE}/media/x/`), '/media/x/poster.jpg?token=a+b')
  const signed = '/media/x/master.m3u8?exp=1&sig=s'
  assert.equal(withTokenParam(signed, 'T', `${PAGE}/`), signed)
  assert.equal(withTokenParam(`${PLATFORM}/pic.jpg`, 'T', `${PAGE}/`), `${PLATFORM}/pic.jpg`)
  assert.equal(withTokenParam('/api/events', '', `${PAGE}/`), '/api/events')
  assert.equal(withTokenParam('', 'T', `${PAGE}/`), '')
  assert.equal(withTokenParam('/x', 'T', 'not a url'), '/x')
})

test('bearerToken reads the token out of an Authorization value', () => {
  assert.equal(bearerToken('Bearer abc.def'), 'abc.def')
  assert.equal(bearerToken('bearer   abc'), 'abc')
  assert.equal(bearerToken(''), '')
  assert.equal(bearerToken(null), '')
  assert.equal(bearerToken(undefined), '')
})

function credential ({ cookie = '' } = {}) {
  const storage = fakeStorage()
  return new Credential(tokenStore(() => storage), () => cookie)
}

test('Credential: the tab\'s token first, else the cookie', () => {
  const fromCookie = credential({ cookie: 'from-cookie' })
  assert.equal(fromCookie.token(), 'from-cookie')
  fromCookie.set('own')
  assert.equal(fromCookie.token(), 'own')
  assert.equal(credential().token(), '')
  assert.equal(credential().set(''), null)
})

test('Credential: a refused token is reported once, as expired, until a new one arrives', () => {
  const c = credential()
  c.set('old')
  assert.deepEqual(c.refused('old'), { retry: false, reason: 'expired' })
  assert.deepEqual(c.refused('old'), { retry: false, reason: null })
  assert.deepEqual(c.set('new'), { renewed: true })
  assert.deepEqual(c.refused('old'), { retry: true, reason: null }) // a request still out with the old one
  assert.deepEqual(c.refused('new'), { retry: false, reason: 'expired' })
})

test('Credential: a request without a token is refused as missing', () => {
  const c = credential()
  assert.deepEqual(c.refused(''), { retry: false, reason: 'missing' })
  assert.deepEqual(c.refused(''), { retry: false, reason: null })
  assert.deepEqual(c.set('handed-over'), { renewed: true })
  assert.deepEqual(credential().set('first'), { renewed: false })
})
