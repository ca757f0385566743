"""Rebuild tests/data/ (the data the tests carry) from the shared data folder: a fixed, small subset.

Usage: .venv/bin/python scripts/make_test_data.py [SHARED_DATA]   (default ../shared/data or $CAMFLEET_TEST_DATA)

The images are copied byte for byte (first ones by file name, so reruns give the same files); the clip is the
first seconds of video/plaza.avi, downscaled and re-encoded (MPEG-4 part 2 in AVI, which OpenCV's bundled
FFmpeg reads and writes everywhere) so it stays a few hundred kB.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "data"

# (split, class) -> how many images; sized for the tests that read them (see tests/conftest.py).
IMAGES: dict[tuple[str, str], int] = {
    ("train", "dress"): 20,
    ("train", "hat"): 20,
    ("train", "shoes"): 20,
    ("validation", "dress"): 5,
    ("validation", "hat"): 5,
    ("validation", "shoes"): 5,
    ("validation", "pants"): 5,
    ("validation", "skirt"): 6,
}
CLIP_FRAMES = 60  # every second decoded frame: about 2.4 s of the plaza at 25 fps
CLIP_STEP = 2
CLIP_SIZE = (480, 270)
CLIP_FPS = 25.0


def copy_images(shared: Path) -> int:
    """Copy the image subset and the dataset's licence; return the number of images."""
    total = 0
    for (split, cls), count in IMAGES.items():
        files = sorted((shared / "clothing" / split / cls).glob("*.jpg"))[:count]
        if len(files) < count:
            raise SystemExit(f"need {count} images in {shared / 'clothing' / split / cls}, found {len(files)}")
        dest = TARGET / "clothing" / split / cls
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for file in files:
            shutil.copyfile(file, dest / file.name)
        total += len(files)
    shutil.copyfile(shared / "clothing" / "LICENSE", TARGET / "clothing" / "LICENSE")
    return total


def cut_clip(shared: Path) -> Path:
    """Write the short, small clip and return its path."""
    import cv2  # the agent's dependency; imported here so the image part runs without it

    src = cv2.VideoCapture(str(shared / "video" / "plaza.avi"))
    out = TARGET / "video" / "plaza.avi"
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, CLIP_SIZE)
    written = index = 0
    while written < CLIP_FRAMES:
        ok, frame = src.read()
        if not ok:
            raise SystemExit(f"plaza.avi ended after {index} frames")
        if index % CLIP_STEP == 0:
            writer.write(cv2.resize(frame, CLIP_SIZE, interpolation=cv2.INTER_AREA))
            written += 1
        index += 1
    writer.release()
    src.release()
    return out


def main() -> None:
    default = os.environ.get("CAMFLEET_TEST_DATA", str(ROOT.parent / "shared" / "data"))
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else default)
    if not (shared / "clothing" / "train").is_dir():
        raise SystemExit(f"shared data not found at {shared}")
    count = copy_images(shared)
    clip = cut_clip(shared)
    print(f"{count} images and {clip.relative_to(ROOT)} ({clip.stat().st_size // 1024} kB) in {TARGET}")


if __name__ == "__main__":
    main()
