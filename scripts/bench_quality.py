#!/usr/bin/env python3
"""Quality-targeted ladder vs the old fixed-bitrate ladder, on the same generated clips in
the same run: bytes, SSIM/PSNR per rung, encode CPU, output loudness.

Two 1080p30 sources are generated: a lecture (text slides changing every third of the clip,
a small noisy webcam inset, quiet mono speech at about -30 LUFS) and a high-motion noisy clip
(moving test pattern + strong temporal noise, stereo music-like tones). Each goes through
``transcoder.pipeline.transcode`` twice: once with the settings of config.toml (capped CRF,
one shared audio group, loudness normalisation, lean ladder) and once with the old ones
(``rate_control = "bitrate"``, audio in every rung, no normalisation, every rung kept).

Per rung: measured video kbps, SSIM and PSNR against the source scaled to the rung's size and
rate (same scaler the ladder uses). Per clip: all output bytes (every rendition, audio
included), the encode CPU (children's user + system time around the transcode: the ladder is
one ffmpeg, so CPU is per clip, not per rung), the output loudness (ebur128: integrated LUFS,
true peak) and the new/old ratios against the issue's targets. Exits 1 if a target is missed.
Usage: .venv/bin/python scripts/bench_quality.py [--duration 30] [--clips lecture,motion]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import TranscodeConfig, load_settings  # noqa: E402
from transcoder.ladder import lean_ladder  # noqa: E402
from transcoder.pipeline import transcode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SPEECH_LUFS = -30.0
TIMEOUT = 3600


def ffmpeg(*args: str, capture: bool = False) -> str:
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-y", *args],
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ffmpeg failed: {' '.join(args)[:400]}\n{proc.stderr[-3000:]}")
    return proc.stderr if capture else ""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def slides_filter(duration: float) -> str:
    """Three slides of black text on white, each shown for a third of the clip."""
    parts = []
    third = duration / 3
    for slide in range(3):
        start, end = slide * third, (slide + 1) * third
        enable = f"enable='between(t,{start:.2f},{end:.2f})'"
        parts.append(f"drawtext=fontfile={FONT}:text='Lecture {slide + 1}\\: signals and "
                     f"systems':x=120:y=100:fontsize=72:fontcolor=black:{enable}")
        for line in range(7):
            parts.append(f"drawtext=fontfile={FONT}:text='- point {slide + 1}.{line + 1}\\: "
                         f"the Fourier transform of a sampled signal is periodic':x=160:"
                         f"y={260 + line * 90}:fontsize=44:fontcolor=0x202060:{enable}")
    return ",".join(parts)


def make_lecture(path: Path, duration: float) -> None:
    speech = path.with_suffix(".speech.wav")
    # Voiced-speech-like: a 110-140 Hz harmonic series with syllables (4 Hz) and pauses.
    expr = ("(sin(2*PI*(120+20*sin(2*PI*0.7*t))*t)+0.6*sin(4*PI*(120+20*sin(2*PI*0.7*t))*t)"
            "+0.4*sin(6*PI*120*t)+0.25*sin(10*PI*120*t))"
            "*(0.5+0.5*sin(2*PI*4*t))*gt(sin(2*PI*0.23*t)+0.6,0)*0.2")
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc='{expr}':s=48000:d={duration}",
           "-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude=0.01:d={duration}:r=48000",
           "-filter_complex", "[0:a][1:a]amix=inputs=2:normalize=0,lowpass=f=6000",
           "-ac", "1", str(speech))
    measured = integrated_lufs(speech)
    ffmpeg("-f", "lavfi", "-i", f"color=c=white:s=1920x1080:r=30:d={duration}",
           "-f", "lavfi", "-i", f"testsrc2=s=320x240:r=30:d={duration}", "-i", str(speech),
           "-filter_complex",
           f"[0:v]{slides_filter(duration)}[bg];[1:v]noise=alls=6:allf=t+u[cam];"
           f"[bg][cam]overlay=x=W-w-40:y=H-h-40,format=yuv420p[v];"
           f"[2:a]volume={SPEECH_LUFS - measured:.2f}dB[a]",
           "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "12",
           "-c:a", "aac", "-b:a", "128k", "-ac", "1", "-shortest", str(path))


def make_motion(path: Path, duration: float) -> None:
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s=1920x1080:r=30:d={duration}",
           "-f", "lavfi", "-i", f"sine=f=330:sample_rate=48000:d={duration}",
           "-f", "lavfi", "-i", f"sine=f=440:sample_rate=48000:d={duration}",
           "-filter_complex", "[0:v]noise=alls=22:allf=t+u,format=yuv420p[v];"
           "[1:a][2:a]join=inputs=2:channel_layout=stereo,volume=-12dB[a]",
           "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "14",
           "-c:a", "aac", "-b:a", "192k", "-shortest", str(path))


def integrated_lufs(path: Path) -> float:
    return loudness(path)[0]


def loudness(path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) by ebur128."""
    err = ffmpeg("-nostats", "-i", str(path), "-map", "0:a:0", "-af", "ebur128=peak=true",
                 "-f", "null", "-", capture=True)
    summary = err[err.rfind("Summary:"):]
    i = float(re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary).group(1))
    peak = re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary)
    return i, float(peak.group(1)) if peak else float("nan")


def channel_rms(path: Path) -> list[float]:
    err = ffmpeg("-nostats", "-i", str(path), "-map", "0:a:0", "-af",
                 "astats=measure_perchannel=RMS_level:measure_overall=none", "-f", "null", "-",
                 capture=True)
    return [float(v) for v in re.findall(r"RMS level dB: (-?[\d.]+|-inf)", err)]


def joined(folder: Path) -> Path:
    """init + segments of one rendition as one playable file, in playlist order."""
    text = (folder / "index.m3u8").read_text(encoding="utf-8")
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)
    files = ([folder / init.group(1)] if init else []) + [
        folder / line for line in text.splitlines() if line and not line.startswith("#")]
    out = folder.parent / f"{folder.name}.joined.mp4"
    out.write_bytes(b"".join(f.read_bytes() for f in files))
    return out


def media_bytes(folder: Path) -> tuple[int, float]:
    """(bytes of init + segments, seconds) of one rendition."""
    text = (folder / "index.m3u8").read_text(encoding="utf-8")
    seconds = sum(float(m) for m in re.findall(r"#EXTINF:([\d.]+)", text))
    total = sum(p.stat().st_size for p in folder.iterdir()
                if p.suffix in (".m4s", ".ts", ".mp4") and ".joined" not in p.name)
    return total, seconds


def compare(rendition: Path, source: Path, width: int, height: int,
            fps: float) -> tuple[float, float]:
    """(SSIM All, PSNR average) of a rendition against the source at its size and rate."""
    err = ffmpeg(
        "-nostats", "-i", str(rendition), "-i", str(source), "-lavfi",
        f"[0:v]setpts=PTS-STARTPTS,format=yuv420p,split[d1][d2];"
        f"[1:v]fps={fps},scale={width}:{height},setsar=1,format=yuv420p,setpts=PTS-STARTPTS,"
        f"split[r1][r2];[d1][r1]ssim;[d2][r2]psnr", "-f", "null", "-", capture=True)
    ssim = float(re.findall(r"SSIM .*All:([\d.]+)", err)[-1])
    psnr_raw = re.findall(r"PSNR .*average:([\d.]+|inf)", err)[-1]
    return ssim, float(psnr_raw)


@dataclass
class Rung:
    name: str
    kbps: float
    ssim: float
    psnr: float


@dataclass
class Run:
    rungs: list[Rung]
    dropped: list[str]
    total_bytes: int
    audio_kbps: float
    cpu: float
    lufs: float
    true_peak: float
    channels_rms: list[float]


def run_once(source: Path, out: Path, cfg: TranscodeConfig) -> Run:
    out.mkdir()
    cpu0 = children_cpu()
    result = transcode(source, out, cfg, timeout=TIMEOUT)
    cpu = children_cpu() - cpu0
    rungs, total = [], 0
    shared = out / "audio"
    audio_bytes, audio_seconds = media_bytes(shared) if shared.is_dir() else (0, 0.0)
    total += audio_bytes
    for r in result.renditions:
        folder = out / r["name"]
        size, seconds = media_bytes(folder)
        total += size
        joined_file = joined(folder)
        video_kbps = size * 8 / seconds / 1000
        if not shared.is_dir():  # the rung's own audio is inside its segments
            video_kbps -= cfg_audio_kbps(cfg, r["name"])
        ssim, psnr = compare(joined_file, source, r["width"], r["height"], r["frame_rate"])
        rungs.append(Rung(r["name"], video_kbps, ssim, psnr))
    listen = joined(shared) if shared.is_dir() else joined(out / result.renditions[0]["name"])
    lufs, peak = loudness(listen)
    planned = [rung.name for rung in cfg.ladder if rung.height <= result.height]
    dropped = [n for n in planned if n not in {r["name"] for r in result.renditions}]
    audio_kbps = audio_bytes * 8 / audio_seconds / 1000 if audio_seconds else \
        sum(cfg_audio_kbps(cfg, r["name"]) for r in result.renditions)
    return Run(rungs, dropped, total, audio_kbps, cpu, lufs, peak, channel_rms(listen))


def cfg_audio_kbps(cfg: TranscodeConfig, name: str) -> int:
    return next(r.audio_kbps for r in cfg.ladder if r.name == name)


def report(clip: str, old: Run, new: Run) -> list[str]:
    """Print one clip's table; return the targets it misses."""
    print(f"\n== {clip} ==")
    print(f"{'rung':<7}{'old kbps':>10}{'old SSIM':>10}{'old PSNR':>10}"
          f"{'new kbps':>10}{'new SSIM':>10}{'new PSNR':>10}{'new/old':>9}")
    new_by = {r.name: r for r in new.rungs}
    missed = []
    for o in old.rungs:
        n = new_by.get(o.name)
        if n is None:
            print(f"{o.name:<7}{o.kbps:>10.0f}{o.ssim:>10.5f}{o.psnr:>10.2f}"
                  f"{'(dropped: adds nothing)':>40}")
            continue
        print(f"{o.name:<7}{o.kbps:>10.0f}{o.ssim:>10.5f}{o.psnr:>10.2f}"
              f"{n.kbps:>10.0f}{n.ssim:>10.5f}{n.psnr:>10.2f}{n.kbps / o.kbps:>9.2f}")
        if clip == "lecture" and (n.ssim < 0.995 or n.psnr < 42):
            missed.append(f"{clip} {n.name}: SSIM {n.ssim:.4f} / PSNR {n.psnr:.1f} below target")
        if clip == "motion" and n.ssim < o.ssim - 0.002:
            missed.append(f"{clip} {n.name}: SSIM {n.ssim:.4f} more than 0.002 below old")
    ratio = new.total_bytes / old.total_bytes
    cpu_ratio = new.cpu / old.cpu
    print(f"audio: old {old.audio_kbps:.0f} kbps over all rungs, new {new.audio_kbps:.0f} kbps "
          f"once (shared group)")
    print(f"total bytes: old {old.total_bytes / 1e6:.2f} MB, new {new.total_bytes / 1e6:.2f} MB,"
          f" new/old {ratio:.3f}; dropped rungs: {', '.join(new.dropped) or 'none'}")
    kbps = [r.kbps for r in new.rungs]
    for saving in (0.25, 0.35, 0.5):
        keep = lean_ladder(kbps, saving)
        gone = [r.name for r, k in zip(new.rungs, keep) if not k]
        print(f"  lean rule, rung_min_saving = {saving}: would drop {', '.join(gone) or 'none'}")
    print(f"encode CPU: old {old.cpu:.1f} s, new {new.cpu:.1f} s, new/old {cpu_ratio:.2f}")
    print(f"loudness: old {old.lufs:.1f} LUFS / {old.true_peak:.1f} dBTP, "
          f"new {new.lufs:.1f} LUFS / {new.true_peak:.1f} dBTP; new channel RMS "
          f"{', '.join(f'{v:.1f}' for v in new.channels_rms)} dBFS")
    if clip == "lecture" and ratio > 0.30:
        missed.append(f"lecture bytes new/old {ratio:.3f} > 0.30")
    if clip == "motion" and ratio > 1.10:
        missed.append(f"motion bytes new/old {ratio:.3f} > 1.10")
    if cpu_ratio > 1.15:
        missed.append(f"{clip} CPU new/old {cpu_ratio:.2f} > 1.15")
    if abs(new.lufs + 16) > 1 or new.true_peak > -1:
        missed.append(f"{clip} loudness {new.lufs:.1f} LUFS / {new.true_peak:.1f} dBTP")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="clip length, seconds")
    parser.add_argument("--clips", default="lecture,motion")
    parser.add_argument("--config", default=str(ROOT / "config.toml"),
                        help="config whose [transcode] is the new ladder")
    args = parser.parse_args()
    new_cfg = load_settings(args.config, env={}).transcode
    old_cfg = dataclasses.replace(new_cfg, rate_control="bitrate", audio_group=False,
                                  loudness=False, rung_min_saving=0.0)
    makers = {"lecture": make_lecture, "motion": make_motion}
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tusflow-quality-") as tmp:
        root = Path(tmp)
        for clip in args.clips.split(","):
            source = root / f"{clip}.mp4"
            print(f"generating {clip} ({args.duration:g} s 1920x1080)...", flush=True)
            makers[clip](source, args.duration)
            print(f"source loudness {integrated_lufs(source):.1f} LUFS", flush=True)
            runs = {}
            for label, cfg in (("old", old_cfg), ("new", new_cfg)):
                print(f"transcoding {clip} with the {label} settings...", flush=True)
                runs[label] = run_once(source, root / f"{clip}-{label}", cfg)
            missed += report(clip, runs["old"], runs["new"])
    print()
    for line in missed:
        print("MISSED:", line)
    print("all targets met" if not missed else f"{len(missed)} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
