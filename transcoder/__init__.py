"""Turn one uploaded file into an adaptive HLS ladder, with no queue, database or web code.

``pipeline.transcode`` is the entry point; the other modules each do one job (probe the
input, plan the ladder, build ffmpeg argv, parse progress, write playlists, plan extras) so
they can be tested without running ffmpeg.
"""

from transcoder.errors import FfmpegFailed, InputRejected, TranscodeCancelled, TranscodeError

__all__ = ["FfmpegFailed", "InputRejected", "TranscodeCancelled", "TranscodeError"]
