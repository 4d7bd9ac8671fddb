"""Upload a file with tuspy, chunk by chunk, remembering the URL in tuspy's FileStorage; run as
a separate process so a test can SIGKILL it mid-upload and start it again to resume.

usage: python tuspy_upload.py ENDPOINT FILE STORAGE CHUNK_SIZE PAUSE_SECONDS
"""

import sys
import time

from tusclient import client
from tusclient.storage.filestorage import FileStorage

endpoint, path, storage_path, chunk_size, pause = sys.argv[1:6]
storage = FileStorage(storage_path)
uploader = client.TusClient(endpoint).uploader(
    file_path=path, chunk_size=int(chunk_size), store_url=True, url_storage=storage, retries=8,
    retry_delay=0, metadata={"filename": "lecture.bin"})
print(f"start {uploader.offset} {uploader.url}", flush=True)
size = uploader.get_file_size()
if uploader.url is None:
    uploader.set_url(uploader.create_url())
    uploader.offset = 0
    print(f"created {uploader.url}", flush=True)
while uploader.offset < size:
    uploader.upload_chunk()
    print(f"offset {uploader.offset} {uploader.url}", flush=True)
    time.sleep(float(pause))
print(f"done {uploader.url}", flush=True)
storage.close()
