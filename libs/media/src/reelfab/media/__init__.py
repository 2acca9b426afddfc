"""Media plumbing on ffmpeg/ffprobe (Debian's packages): probing, streaming frames in and out of
numpy without per-frame files, and finding (or installing) the tools."""
