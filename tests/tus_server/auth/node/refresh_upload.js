// A long upload whose token expires half way: tus-js-client refreshes it and resumes.
// usage: node refresh_upload.js ENDPOINT FILE CHUNK_SIZE FIRST_TOKEN TOKEN_URL STALL_MS
//
// The platform hands the page a short-lived JWT (FIRST_TOKEN). Before the second PATCH the
// script stalls STALL_MS (a slow network), so that PATCH goes out with an expired token and
// the server answers 401 before reading any of its body. onShouldRetry sees the 401, marks the
// token stale and asks for a retry; onBeforeRequest of the retry (tus-js-client resumes with a
// HEAD, then PATCHes from the server's offset) fetches a fresh token from TOKEN_URL (the
// platform) and sends it. Prints "status <code> <method>" for each answer, "refreshed",
// and "done <url>" or "error <message>".
'use strict';
const fs = require('fs');
const http = require('http');
const tus = require('tus-js-client');

const [endpoint, file, chunkSize, firstToken, tokenUrl, stallMs] = process.argv.slice(2);
let token = firstToken;
let stale = false;
let patches = 0;

function fetchToken() {
  return new Promise((resolve, reject) => {
    http.get(tokenUrl, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body).token) : reject(new Error(`token ${res.statusCode}`))));
    }).on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const upload = new tus.Upload(fs.readFileSync(file), {
  endpoint,
  chunkSize: Number(chunkSize),
  retryDelays: [0, 100, 500],
  metadata: { filename: 'long-lecture.bin', filetype: 'application/octet-stream' },
  async onBeforeRequest(req) {
    if (req.getMethod() === 'PATCH' && ++patches === 2) await sleep(Number(stallMs));
    if (stale) {
      token = await fetchToken();
      stale = false;
      process.stdout.write('refreshed\n');
    }
    req.setHeader('Authorization', `Bearer ${token}`);
  },
  onAfterResponse(req, res) {
    process.stdout.write(`status ${res.getStatus()} ${req.getMethod()} ${res.getHeader('Upload-Offset') || ''}\n`);
  },
  onShouldRetry(err, attempt, options) {
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
    if (status === 401) {
      stale = true;
      return attempt < 3;
    }
    return status !== 403 && status !== 404 && attempt < 3;
  },
  onError(err) { process.stdout.write(`error ${err.message}\n`); process.exit(1); },
  onSuccess() { process.stdout.write(`done ${upload.url}\n`); process.exit(0); },
});
upload.start();
setTimeout(() => { process.stdout.write('error timeout\n'); process.exit(2); }, 60000).unref();
