"""``tusflow upload``: a bulk tus client built on tuspy, meant to be left running overnight.

One module per job:

- ``discovery``  turns PATH arguments (files, directories, globs) into a list of files;
- ``server``     asks the endpoint (OPTIONS) whether it speaks tus and what it allows;
- ``state``      the resumable-URL store (tuspy's Storage interface) in a JSON state file;
- ``transfer``   uploads one file: tuspy's Uploader plus timeouts, retries and progress hooks;
- ``events``     the events a transfer emits, shared by every way of showing them;
- ``progress``   renders events: bars on a terminal, plain lines, or JSON lines;
- ``summary``    tallies results into the end-of-run table and the exit status;
- ``media``      follows the media API after upload (``--wait``);
- ``runner``     ties them together for one run.
"""
