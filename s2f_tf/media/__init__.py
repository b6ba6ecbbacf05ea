"""Real media -> what a Clip holds: 16 kHz mono int16 PCM and an aligned square face crop.

What is where (import the module you need; this package imports nothing):
  errors.py  MediaError(reason, detail), an S2FError, and its typed reasons (MISSING_FILE,
             UNDECODABLE, TOO_SHORT, NO_FACE, SEVERAL_FACES, NO_FACE_NEAR_CENTER; REASONS)
  audio.py   load_audio(path) -> int16 [samples] at 16 kHz (soundfile, else ffmpeg);
             decode_blocks(path) (the same, a block at a time); open_audio(path) -> PcmFile (a
             recording of any length in a temporary file, read a span at a time);
             to_mono_int16(samples, rate); ffmpeg_exe() (the imageio-ffmpeg binary)
  video.py   read_video_segment(path, start, end) -> (int16 [samples], uint8 [H, W, 3] frame);
             read_frame(path, time_seconds)
  faces.py   load_image(path); detect_faces(frame) (MTCNN on CPU, TensorFlow imported on first
             use); select_face; alignment / crop_face (canonical similarity alignment);
             face_from_frame; Face, LANDMARK_NAMES, NUM_LANDMARKS, the CANONICAL_* layout

Every expected failure raises `MediaError(reason, detail)`. Paths are local files (libsndfile
and ffmpeg read local paths).
"""
