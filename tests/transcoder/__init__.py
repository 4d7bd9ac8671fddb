"""Tests of the pure transcoding pipeline (real ffmpeg, synthetic clips)."""
