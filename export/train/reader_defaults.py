"""The reader stage's defaults, shared by ``python -m export.train.reader_stage`` and ``lvm-train`` (a
module without torch, so the training CLI's ``--help`` and plan stay quick)."""

# generated training videos: 256 answered activity and time better on the validation set than 64 and
# 128 (docs/accuracy.md, how many training videos); the first ones' tokens are stage 1's, cached, and
# each further one costs 10-14 s to render, encode and stream on 2 CPU cores. 4,500 steps of 8 memories
# see each of the ~29,000 memories and timeline rows of 256 videos (56 + 56 a video) about 1.3 times
# (1,500: 0.4): time, object and "not seen" answered better on the validation set (docs/accuracy.md, how
# many steps). With the calibration videos and the batch below the whole lvm-tiny run takes about
# 2 hours on 2 CPU cores (docs/training.md)
READER_VIDEOS = 256
READER_CALIB_VIDEOS = 16
READER_STEPS = 4500
READER_BATCH = 8
READER_LR = 2e-3
