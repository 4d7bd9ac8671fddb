// Upload one file with tus-js-client under Node and print "done <url>" (or "error <message>").
// usage: node upload.js ENDPOINT FILE CHUNK_SIZE PARALLEL MODE [PROTOCOL]
//   MODE: "stream" (fs.ReadStream, needs chunkSize), "buffer", or "deferred" (a Buffer with
//   uploadLengthDeferred: the last data PATCH carries Upload-Length). Deferred length is not
//   tried with a Node stream: tus-js-client 4.x then sends its final PATCH with
//   Content-Length: chunkSize but no body once the file is used up, which no server can finish.
//   CHUNK_SIZE 0 means one request for the whole file (chunkSize Infinity).
//   PROTOCOL: tus-js-client's `protocol` option, "tus-v1" (default), "ietf-draft-03" (interop
//   version 5) or "ietf-draft-05" (interop version 6).
'use strict';
const fs = require('fs');
const tus = require('tus-js-client');

const [endpoint, file, chunkSize, parallel, mode, protocol] = process.argv.slice(2);
const size = fs.statSync(file).size;
const input = mode === 'stream' ? fs.createReadStream(file) : fs.readFileSync(file);
const options = {
  endpoint,
  chunkSize: Number(chunkSize) || Infinity,
  protocol: protocol || 'tus-v1',
  parallelUploads: Number(parallel),
  retryDelays: [0, 50, 100, 200, 400, 800, 1000, 1000, 1000, 1000],
  metadata: { filename: 'lecture.bin', filetype: 'application/octet-stream' },
  removeFingerprintOnSuccess: true,
  onProgress(sent, total) { process.stdout.write(`progress ${sent} ${total}\n`); },
  onShouldRetry(err, attempt) {
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
    process.stdout.write(`retry ${attempt} ${status}\n`);
    return attempt < 10;
  },
  // One line per request and response, so a failed test shows the whole exchange.
  onBeforeRequest(req) {
    process.stdout.write(`request ${req.getMethod()} offset=${req.getHeader('Upload-Offset')}\n`);
  },
  onAfterResponse(req, res) {
    process.stdout.write(`response ${req.getMethod()} ${res.getStatus()} offset=${res.getHeader('Upload-Offset')} `
      + `complete=${res.getHeader('Upload-Complete')}\n`);
  },
  onError(err) { process.stdout.write(`error ${err.message}\n`); process.exit(1); },
  onSuccess() { process.stdout.write(`done ${upload.url}\n`); process.exit(0); },
};
if (mode === 'deferred') options.uploadLengthDeferred = true;
else if (mode !== 'buffer') options.uploadSize = size;
const upload = new tus.Upload(input, options);
upload.start();
setTimeout(() => { process.stdout.write('error timeout\n'); process.exit(2); }, 120000).unref();
