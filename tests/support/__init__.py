"""Helpers the tests share; conftests hold only fixtures, and tests import helpers from here.

- waiting: ``wait_until``, the one bounded poll;
- procs: tusflow, redis-server and worker processes started and stopped by PID;
- stack: the stack launcher (settings, database, workers for one config) and a plain tus upload;
- proxy: loopback proxies that cut, slow, gate or corrupt connections;
- asgi, httpd, postgres: in-process apps, small local HTTP sites, the PostgreSQL cluster;
- media, files, filtergraph: generated clips, sha256 of files, ffmpeg filter graphs parsed;
- credentials, webhooks, metrics, store, browser: what the auth, ops, api and browser tests
  share (tokens and JWTs, the webhook receiver, /metrics scraping, rows, page helpers).
"""
